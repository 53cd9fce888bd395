import pytest
import yaml

from ppufo.utils.config import apply_override, load_config, parse_value, validate
from ppufo.utils.errors import ConfigError


def minimal():
    return {
        "Global": {"max_iters": 5},
        "Arch": {"name": "MultiTaskModel", "Backbone": {"name": "ViT_tiny_patch16"}},
        "Tasks": {"person": {"datasets": [{"name": "Market1501", "root": "m"}], "batch_size": 16,
                             "head": {"name": "CosFace"}, "loss": [{"CELoss": {}}]}},
    }


def write(tmp_path, cfg):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def test_defaults_filled_and_typed_overrides(tmp_path):
    cfg = load_config(write(tmp_path, minimal()), [
        "Global.seed=7", "Global.image_shape=[3, 64, 32]", "Global.use_visualdl=false",
        "Global.checkpoints=null", "Tasks.person.datasets.0.root=other", "Optimizer.lr.learning_rate=1e-3",
        "Tasks.person.lr_mult=2"])
    g = cfg["Global"]
    assert g["seed"] == 7 and g["image_shape"] == [3, 64, 32] and g["use_visualdl"] is False
    assert g["checkpoints"] is None and g["data_root"] == "./data"  # default filled
    assert cfg["Tasks"]["person"]["datasets"][0]["root"] == "other"
    assert cfg["Optimizer"]["lr"]["learning_rate"] == pytest.approx(1e-3)  # "1e-3" typed as float
    assert cfg["Tasks"]["person"]["lr_mult"] == 2.0 and isinstance(cfg["Tasks"]["person"]["lr_mult"], float)
    assert cfg["Tasks"]["person"]["sampler"] == {"name": "PKSampler", "num_instances": 4}
    assert cfg["DataLoader"]["Train"]["num_workers"] == 2
    assert cfg["Metric"]["use_faiss"] is False


@pytest.mark.parametrize("override, message", [
    ("Global.foo=1", "Global: unknown key(s) ['foo']; allowed: ['allow_partial_load', 'amp'"),
    ("Global.max_iters=1.5", "Global.max_iters: expected int, got float 1.5"),
    ("Global.use_visualdl=3", "Global.use_visualdl: expected bool"),
    ("Tasks.person.batchsize=3", "Tasks.person: unknown key(s) ['batchsize']"),
    ("Bogus.x=1", "top level: unknown key(s) ['Bogus']"),
    ("Loss.task_weights={face: 1}", "Loss.task_weights: unknown task(s) ['face']"),
    ("Tasks.person.datasets.3.root=x", "not an index of a list of 1"),
    ("Global.max_iters", "expected Section.key=value"),
    # out of range: the key, the value and the allowed range
    ("Global.seed=-1", "Global.seed: -1 is out of range; allowed: [0, 4294967295]"),
    ("Global.seed=4294967296", "Global.seed: 4294967296 is out of range; allowed: [0, 4294967295]"),
    ("DataLoader.Train.num_workers=-1", "DataLoader.Train.num_workers: -1 is out of range; allowed: >= 0"),
    ("DataLoader.Eval.num_workers=-1", "DataLoader.Eval.num_workers: -1 is out of range; allowed: >= 0"),
    ("Global.log_interval=0", "Global.log_interval: 0 is out of range; allowed: >= 1"),
    ("Global.save_interval=-5", "Global.save_interval: -5 is out of range; allowed: >= 0"),
    ("Global.eval_interval=-1", "Global.eval_interval: -1 is out of range; allowed: >= 0"),
    ("Global.max_iters=0", "Global.max_iters: 0 is out of range; allowed: >= 1"),
    ("Global.cpu_threads=-2", "Global.cpu_threads: -2 is out of range; allowed: >= 0"),
    ("Tasks.person.batch_size=0", "Tasks.person.batch_size: 0 is out of range; allowed: >= 1"),
    ("Tasks.person.lr_mult=-0.5", "Tasks.person.lr_mult: -0.5 is out of range; allowed: >= 0"),
    ("DataLoader.Eval.batch_size=0", "DataLoader.Eval.batch_size: 0 is out of range; allowed: >= 1"),
    ("Metric.chunk_size=0", "Metric.chunk_size: 0 is out of range; allowed: >= 1"),
    ("Search.quantile=1.5", "Search.quantile: 1.5 is out of range; allowed: [0, 1]"),
    ("Search.seed=-3", "Search.seed: -3 is out of range; allowed: [0, 4294967295]"),
    ("Search.num_samples=0", "Search.num_samples: 0 is out of range; allowed: >= 1"),
])
def test_rejections_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, minimal()), [override])
    assert message in str(e.value)
    assert "c.yaml" in str(e.value) or "override" in str(e.value)


def test_missing_required_task_key(tmp_path):
    cfg = minimal()
    del cfg["Tasks"]["person"]["head"]
    with pytest.raises(ConfigError, match=r"Tasks.person.head: required key is missing"):
        validate(cfg)


def test_parse_value_types():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("null") is None and parse_value("[1, 2]") == [1, 2]
    assert parse_value("ViT_base") == "ViT_base" and parse_value("2e-4") == pytest.approx(2e-4)


def test_value_may_contain_equals():
    cfg = apply_override({"Global": {}}, "Global.output_dir=a=b")
    assert cfg["Global"]["output_dir"] == "a=b"


def test_shipped_configs_validate():
    for path in ["configs/quickstart.yaml", "configs/ufo_vitl.yaml"]:
        cfg = load_config(path)
        assert set(cfg["Tasks"]) == {"face", "person", "vehicle", "product"}
    paper = load_config("configs/ufo_vitl.yaml")
    assert paper["Global"]["image_shape"] == [3, 384, 384] and paper["Global"]["max_iters"] == 100000
    assert [paper["Tasks"][t]["batch_size"] for t in ("face", "person", "vehicle", "product")] == [1024, 512, 512, 512]
    assert paper["Optimizer"]["lr"]["learning_rate"] == 0.2
    assert paper["Arch"]["Backbone"] == {"name": "ViT_large_patch16", "drop_path_rate": 0.2, "recompute": True,
                                         "fused_attention": True}
    assert paper["Global"]["amp"] == {"enable": True, "dtype": "bfloat16", "level": "O1", "eval_fp32": False}
    assert sum(len(t["test_sets"]) for t in paper["Tasks"].values()) == 13


def test_range_edge_values_accepted(tmp_path):
    cfg = load_config(write(tmp_path, minimal()), [
        "Global.seed=0", "Global.log_interval=1", "Global.save_interval=0", "Global.eval_interval=0",
        "Global.max_iters=1", "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0",
        "DataLoader.Eval.batch_size=1", "Tasks.person.batch_size=1", "Tasks.person.lr_mult=0",
        "Search.quantile=1", "Search.seed=4294967295"])
    assert cfg["Global"]["seed"] == 0 and cfg["Search"]["seed"] == 2 ** 32 - 1
    cfg = load_config(write(tmp_path, minimal()), ["Global.seed=4294967295"])
    assert cfg["Global"]["seed"] == 2 ** 32 - 1


def test_unknown_backbone_key_names_path_and_allowed_keys(make_config):
    from ppufo.arch import build_model
    config = make_config("Arch.Backbone.foo=1")
    with pytest.raises(ConfigError) as e:
        build_model(config, {t: 10 for t in config["Tasks"]})
    assert "Arch.Backbone" in str(e.value) and "['foo']" in str(e.value)
    assert "accepted: [" in str(e.value) and "'depth'" in str(e.value) and "'embed_dim'" in str(e.value)


def test_a_task_set_to_null_is_dropped_and_not_all_may_be(make_config):
    cfg = make_config("Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null")
    assert list(cfg["Tasks"]) == ["person"] and cfg["Tasks"]["person"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="Tasks: needs at least one entry"):
        make_config("Tasks.face=null", "Tasks.person=null", "Tasks.vehicle=null", "Tasks.product=null")


# ----------------------------------------------------------------------------- files and values that slipped through

@pytest.mark.parametrize("text, message", [
    ("", "the file is empty"),
    ("# only a comment\n", "the file is empty"),
    ("- Global\n- Arch\n", "top level must be a mapping of sections, got list"),
    ("just text\n", "top level must be a mapping of sections, got str"),
])
def test_an_empty_or_non_mapping_config_file_is_one_error_naming_it(tmp_path, text, message):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_a_config_without_arch_or_tasks_names_the_missing_section(tmp_path):
    cfg = minimal()
    del cfg["Arch"]
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, cfg))
    assert "c.yaml: required section(s) ['Arch'] missing" in str(e.value)
    with pytest.raises(ConfigError, match=r"required section\(s\) \['Arch', 'Tasks'\] missing"):
        validate({"Global": {"max_iters": 3}})


@pytest.mark.parametrize("override, key", [
    ("Optimizer.lr.learning_rate=.nan", "Optimizer.lr.learning_rate"),  # a registry-built section
    ("Optimizer.lr.learning_rate=.inf", "Optimizer.lr.learning_rate"),
    ("Tasks.person.lr_mult=.inf", "Tasks.person.lr_mult"),  # passed the range check before (no max)
    ("Search.budget=.nan", "Search.budget"),  # nan < min is False: passed the range check before
    ("Tasks.person.head.scale=.NaN", "Tasks.person.head.scale"),
    ("Tasks.person.loss.0.CELoss.weight=.inf", "Tasks.person.loss.0.CELoss.weight"),
])
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, minimal()), [override])
    assert f"c.yaml: {key}: " in str(e.value) and "is not a finite number" in str(e.value)


def test_non_finite_numbers_in_the_file_itself_are_refused(tmp_path):
    cfg = minimal()
    cfg["Optimizer"] = {"name": "SGD", "lr": {"name": "Cosine", "learning_rate": float("nan")}}
    with pytest.raises(ConfigError, match=r"c.yaml: Optimizer.lr.learning_rate: nan is not a finite number"):
        load_config(write(tmp_path, cfg))


def test_a_config_in_another_encoding_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(minimal()).encode() + "# caf\u00e9 au lait\n".encode("latin-1"))
    n = path.read_bytes().count(b"\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert str(e.value).startswith(f"{path}:{n}: not UTF-8 text (byte 0xe9 at byte 6 of the line")
