"""``_BASE_`` config inheritance: merge rules, chains, relative paths, errors, and the shipped
supernet configs that inherit from the All-in-One ones."""
import os

import pytest
import yaml

from helpers import ROOT
from ppufo.utils.config import dump_config, load_config, validate
from ppufo.utils.errors import ConfigError


def minimal():
    return {
        "Global": {"max_iters": 5, "seed": 1, "image_shape": [3, 64, 64]},
        "Arch": {"name": "MultiTaskModel", "Backbone": {"name": "ViT_tiny_patch16", "depth": 6}},
        "Tasks": {"person": {"datasets": [{"name": "Market1501", "root": "m"}], "batch_size": 16,
                             "head": {"name": "CosFace"}, "loss": [{"CELoss": {}}],
                             "test_sets": [{"name": "Market1501", "root": "m"}, {"name": "DukeMTMC", "root": "d"}]}},
    }


def write(path, cfg):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def deep_merge(base, child):
    """The documented rule, written independently of the loader: mappings merge, the rest replaces."""
    out = dict(base)
    for k, v in child.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_child_overrides_merges_mappings_and_replaces_lists(tmp_path):
    write(tmp_path / "base.yaml", minimal())
    cfg = load_config(write(tmp_path / "child.yaml", {
        "_BASE_": "base.yaml",
        "Global": {"seed": 7},
        "Arch": {"Backbone": {"depth": 2, "drop_path_rate": 0.1}},
        "Tasks": {"person": {"batch_size": 8, "test_sets": [{"name": "MSMT17", "root": "s"}]}},
    }))
    g = cfg["Global"]
    assert (g["seed"], g["max_iters"], g["image_shape"]) == (7, 5, [3, 64, 64])
    assert cfg["Arch"] == {"name": "MultiTaskModel",
                           "Backbone": {"name": "ViT_tiny_patch16", "depth": 2, "drop_path_rate": 0.1}}
    person = cfg["Tasks"]["person"]
    assert person["batch_size"] == 8 and person["datasets"] == [{"name": "Market1501", "root": "m"}]
    assert person["test_sets"] == [{"name": "MSMT17", "root": "s"}]  # replaced, not appended or zipped
    assert "_BASE_" not in cfg


def test_chain_of_bases_and_later_files_win(tmp_path):
    write(tmp_path / "a.yaml", minimal())
    write(tmp_path / "b.yaml", {"_BASE_": "a.yaml", "Global": {"seed": 2, "max_iters": 50}})
    cfg = load_config(write(tmp_path / "c.yaml", {"_BASE_": "b.yaml", "Global": {"seed": 3}}))
    assert (cfg["Global"]["seed"], cfg["Global"]["max_iters"]) == (3, 50)
    assert cfg["Tasks"]["person"]["batch_size"] == 16  # from the grandparent


def test_list_of_bases_merged_in_order(tmp_path):
    write(tmp_path / "model.yaml", minimal())
    write(tmp_path / "long.yaml", {"Global": {"max_iters": 100, "seed": 10, "log_interval": 5}})
    write(tmp_path / "seed.yaml", {"Global": {"seed": 20}})
    cfg = load_config(write(tmp_path / "run.yaml", {"_BASE_": ["model.yaml", "long.yaml", "seed.yaml"],
                                                    "Global": {"log_interval": 1}}))
    g = cfg["Global"]
    assert (g["max_iters"], g["seed"], g["log_interval"]) == (100, 20, 1)


def test_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", minimal())
    write(tmp_path / "left.yaml", {"_BASE_": "root.yaml", "Global": {"seed": 4}})
    write(tmp_path / "right.yaml", {"_BASE_": "root.yaml", "Global": {"max_iters": 9}})
    cfg = load_config(write(tmp_path / "top.yaml", {"_BASE_": ["left.yaml", "right.yaml"]}))
    assert (cfg["Global"]["seed"], cfg["Global"]["max_iters"]) == (1, 9)  # right's copy of root resets seed


def test_base_paths_are_relative_to_the_file_naming_them(tmp_path, monkeypatch):
    write(tmp_path / "common" / "parts" / "model.yaml", minimal())
    write(tmp_path / "common" / "base.yaml", {"_BASE_": "parts/model.yaml", "Global": {"seed": 5}})
    write(tmp_path / "runs" / "exp.yaml", {"_BASE_": "../common/base.yaml", "Global": {"max_iters": 7}})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_config(os.path.join("..", "runs", "exp.yaml"))
    assert (cfg["Global"]["seed"], cfg["Global"]["max_iters"]) == (5, 7)


@pytest.mark.parametrize("files, chain", [
    ({"a.yaml": "a.yaml"}, ["a.yaml", "a.yaml"]),
    ({"a.yaml": "b.yaml", "b.yaml": "c.yaml", "c.yaml": "a.yaml"}, ["a.yaml", "b.yaml", "c.yaml", "a.yaml"]),
])
def test_cycle_is_an_error_naming_the_chain(tmp_path, files, chain):
    for name, base in files.items():
        write(tmp_path / name, {**minimal(), "_BASE_": base})
    with pytest.raises(ConfigError, match="_BASE_ cycle") as e:
        load_config(str(tmp_path / "a.yaml"))
    assert " -> ".join(str(tmp_path / n) for n in chain) in str(e.value)


def test_missing_base_names_the_referring_file_and_the_path_tried(tmp_path):
    write(tmp_path / "mid.yaml", {"_BASE_": "gone/nope.yaml"})
    child = write(tmp_path / "sub" / "child.yaml", {"_BASE_": "../mid.yaml"})
    with pytest.raises(ConfigError) as e:
        load_config(child)
    assert str(e.value) == f"{tmp_path / 'mid.yaml'}: _BASE_ file not found: {tmp_path / 'gone' / 'nope.yaml'}"


@pytest.mark.parametrize("value", [3, None, {"a": "b.yaml"}, ["ok.yaml", 1], ""])
def test_base_must_name_files(tmp_path, value):
    path = write(tmp_path / "c.yaml", {**minimal(), "_BASE_": value})
    with pytest.raises(ConfigError, match=r"c.yaml: _BASE_ must be a file path or a list of file paths"):
        load_config(path)


def test_bases_load_with_the_safe_loader(tmp_path):
    (tmp_path / "evil.yaml").write_text("Global: !!python/object/apply:os.getcwd []\n")
    path = write(tmp_path / "c.yaml", {**minimal(), "_BASE_": "evil.yaml"})
    with pytest.raises(ConfigError, match=r"evil.yaml: invalid YAML"):
        load_config(path)


def test_unknown_key_through_a_base_is_refused_naming_the_base(tmp_path):
    write(tmp_path / "base.yaml", {**minimal(), "Global": {"max_iters": 5, "foo": 1}})
    child = write(tmp_path / "child.yaml", {"_BASE_": "base.yaml", "Global": {"seed": 3}})
    with pytest.raises(ConfigError, match=r"Global: unknown key\(s\) \['foo'\]") as e:
        load_config(child)
    assert str(e.value).startswith(f"{child} (with _BASE_ {tmp_path / 'base.yaml'}): ")


def test_overrides_apply_after_the_merge(tmp_path):
    write(tmp_path / "base.yaml", minimal())
    child = write(tmp_path / "child.yaml", {"_BASE_": "base.yaml", "Global": {"seed": 7}})
    cfg = load_config(child, ["Global.seed=9", "Tasks.person.test_sets.1.root=dd", "Arch.Backbone.depth=3"])
    assert cfg["Global"]["seed"] == 9  # the child's value does not win over -o
    assert cfg["Tasks"]["person"]["test_sets"][1] == {"name": "DukeMTMC", "root": "dd"}  # a list from the base
    assert cfg["Arch"]["Backbone"] == {"name": "ViT_tiny_patch16", "depth": 3}
    with pytest.raises(ConfigError, match=r"top level: unknown key\(s\) \['_BASE_'\]"):
        load_config(child, ["_BASE_=other.yaml"])  # too late to inherit: -o edits the merged config


def test_dumped_config_is_self_contained(tmp_path):
    write(tmp_path / "base.yaml", minimal())
    cfg = load_config(write(tmp_path / "cfgs" / "child.yaml", {"_BASE_": "../base.yaml", "Global": {"seed": 7}}))
    out = tmp_path / "run" / "config.yaml"
    dump_config(cfg, str(out))
    assert "_BASE_" not in out.read_text()
    assert load_config(str(out)) == cfg
    dump_config({**cfg, "_BASE_": "x.yaml"}, str(out))  # a raw dict: still written without it
    assert "_BASE_" not in out.read_text()


@pytest.mark.parametrize("child, base", [("supernet_quickstart.yaml", "quickstart.yaml"),
                                         ("supernet_vitl.yaml", "ufo_vitl.yaml")])
def test_shipped_supernet_configs_are_their_base_plus_their_own_keys(child, base):
    with open(f"{ROOT}/configs/{child}") as f:
        own = yaml.safe_load(f)
    with open(f"{ROOT}/configs/{base}") as f:
        base_raw = yaml.safe_load(f)
    assert own.pop("_BASE_") == base
    assert load_config(f"{ROOT}/configs/{child}") == validate(deep_merge(base_raw, own))
    # only what differs is restated: no section is a copy of the base's
    assert [k for k in own if own[k] == base_raw.get(k)] == []


def test_shipped_supernet_configs_keep_their_own_values():
    demo = load_config(f"{ROOT}/configs/supernet_quickstart.yaml")
    assert demo["Global"]["output_dir"] == "./output/supernet_quickstart"
    assert demo["Arch"]["Backbone"]["name"] == "ViTSupernet" and demo["Arch"]["Backbone"]["depth"] == 6
    assert [len(t["test_sets"]) for t in demo["Tasks"].values()] == [1, 1, 1, 1]
    assert demo["Optimizer"]["name"] == "AdamW" and demo["DataLoader"]["Train"]["num_workers"] == 1  # inherited
    paper = load_config(f"{ROOT}/configs/supernet_vitl.yaml")
    assert paper["Global"]["output_dir"] == "./output/supernet_vitl" and paper["Supernet"]["distill_weight"] == 1.0
    assert paper["Arch"]["Backbone"]["pretrained"] is None and paper["Arch"]["Backbone"]["drop_path_rate"] == 0.2
    assert sum(len(t["test_sets"]) for t in paper["Tasks"].values()) == 13  # inherited
    assert paper["Optimizer"]["name"] == "SGD" and paper["Loss"]["task_weights"]["face"] == 1.0
