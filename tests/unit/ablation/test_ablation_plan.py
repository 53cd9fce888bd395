"""Experiment files: schema errors naming the key, and the expansion into runs."""
import copy
import os

import pytest
import yaml

from helpers import ROOT
from ppufo.ablation.experiment import load_experiment, plan_runs, run_spec
from ppufo.ablation.report import metrics_found, select_cells
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
HOMO = "DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler"
EXP = {"base": QUICKSTART, "overrides": ["Global.max_iters=4"], "seeds": [3, 1],
       "arms": {"d": {"from": "a", "precise_bn": {"num_batches": 5}},  # listed before its source
                "a": {"overrides": []}, "b": {"overrides": [HOMO]}},
       "compare": {"sets": ["Market1501", "SOP"], "metrics": ["rank1", "recall@1"],
                   "pairs": [{"arms": ["a", "b"], "claim": "greater"}]}}


def write(tmp_path, raw, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_runs_go_seed_by_seed_with_derived_arms_after_their_source(tmp_path):
    exp = load_experiment(write(tmp_path, EXP))
    study = str(tmp_path / "study")
    runs = plan_runs(exp, study, ["Global.log_interval=2"])
    assert [(r.index, r.arm, r.seed, r.kind) for r in runs] == [
        (1, "a", 3, "train"), (2, "b", 3, "train"), (3, "d", 3, "precise_bn"),
        (4, "a", 1, "train"), (5, "b", 1, "train"), (6, "d", 1, "precise_bn")]
    assert runs[2].source is runs[0] and runs[5].source is runs[3]
    assert runs[2].precise_bn == {"num_batches": 5} and runs[2].overrides == []
    study_keys = ["Global.seed=3", f"Global.output_dir={study}/runs/b/seed_3", "Global.eval_interval=0",
                  "Global.use_visualdl=false", "Global.checkpoints=null", f"Global.data_root={study}/data/seed_3"]
    # file overrides, then the command line's -o, then the arm's, then the study's own keys
    assert runs[1].overrides == ["Global.max_iters=4", "Global.log_interval=2", HOMO] + study_keys
    assert runs[1].run_dir == f"{study}/runs/b/seed_3" and runs[1].rel_dir == "runs/b/seed_3"
    cfg = load_config(runs[1].base, runs[1].overrides)
    g = cfg["Global"]
    assert (g["seed"], g["max_iters"], g["log_interval"], g["eval_interval"], g["use_visualdl"]) == (3, 4, 2, 0, False)
    assert cfg["DataLoader"]["Train"]["batch_sampler"]["name"] == "HomogeneousBatchSampler"
    assert load_config(runs[3].base, runs[3].overrides)["Global"]["data_root"] == f"{study}/data/seed_1"
    spec = run_spec(runs[2], exp.sets, 3)
    assert spec["source_dir"] == runs[0].run_dir and spec["precise_bn"] == {"num_batches": 5}
    assert run_spec(runs[0], exp.sets, 3)["overrides"][-1] == "Global.cpu_threads=3"


def test_a_config_that_does_not_generate_demo_data_keeps_its_data_root(tmp_path):
    raw = copy.deepcopy(EXP)
    raw["overrides"] += ["Global.generate_demo_data=false", "Global.data_root=/somewhere/real"]
    runs = plan_runs(load_experiment(write(tmp_path, raw)), str(tmp_path / "s"))
    assert not any(o.startswith("Global.data_root=") and "/s/data/" in o for r in runs for o in r.overrides)
    assert {load_config(r.base, r.overrides)["Global"]["data_root"] for r in runs if r.kind == "train"} == {"/somewhere/real"}


def test_identity_follows_the_config_not_the_study_folder(tmp_path):
    exp = load_experiment(write(tmp_path, EXP))
    runs = plan_runs(exp, str(tmp_path / "one"))
    moved = plan_runs(exp, str(tmp_path / "two"))
    ids = [r.identity for r in runs]
    assert ids == [r.identity for r in moved]  # output_dir and a data_root inside the study do not count
    assert len(set(ids)) == len(ids)  # every arm and seed differs
    raw = copy.deepcopy(EXP)
    raw["arms"]["a"]["overrides"] = ["Global.max_iters=5"]
    changed = plan_runs(load_experiment(write(tmp_path, raw)), str(tmp_path / "one"))
    assert changed[0].identity != ids[0] and changed[2].identity != ids[2]  # a, and d derived from it
    assert changed[1].identity == ids[1]
    raw = copy.deepcopy(EXP)
    raw["arms"]["d"]["precise_bn"]["num_batches"] = 6
    assert plan_runs(load_experiment(write(tmp_path, raw)), str(tmp_path / "one"))[2].identity != ids[2]


def test_a_relative_base_is_relative_to_the_experiment_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    raw = dict(EXP, base="../base.yaml")
    (tmp_path / "base.yaml").write_text(f"_BASE_: {QUICKSTART}\n")
    monkeypatch.chdir(tmp_path / "sub")  # the working directory does not matter
    assert load_experiment(write(tmp_path / "sub", raw)).base == str(tmp_path / "base.yaml")


def _set(raw, dotted, value):
    node, keys = raw, dotted.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is KeyError:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


@pytest.mark.parametrize("key, value, message", [
    ("base", KeyError, "exp.yaml: base: required key is missing"),
    ("arm", {}, "top level: unknown key(s) ['arm']"),
    ("base", "nowhere.yaml", "base: config file not found"),
    ("seeds", [], "seeds: expected a non-empty list"),
    ("seeds", [1, 1], "seeds: [1, 1] repeats a seed"),
    ("seeds", [1, "x"], "seeds.1: expected an integer"),
    ("seeds", [-1], "seeds.0: expected an integer in [0, 4294967295]"),
    ("parallel", 0, "parallel: expected an integer >= 1"),
    ("overrides", "Global.max_iters=4", "overrides: expected a list of 'Section.key=value' strings"),
    ("arms.b.overrides", ["Global.seed=3"], "arms.b.overrides: 'Global.seed=3': Global.seed is set by the study"),
    ("arms.b.overrides", ["Global.max_iters"], "arms.b.overrides: 'Global.max_iters' is not 'Section.key=value'"),
    ("arms.b.extra", 1, "arms.b: unknown key(s) ['extra']"),
    ("arms.a/b", {}, "arms.a/b: arm names are folder names"),
    ("arms", {}, "arms: expected a non-empty mapping"),
    ("arms.d.from", "z", "arms.d.from: unknown arm 'z'"),
    ("arms.d.precise_bn", KeyError, "arms.d.precise_bn: required key is missing"),
    ("arms.d.precise_bn.num_batches", 0, "arms.d.precise_bn.num_batches: expected an integer >= 1"),
    ("arms.d.overrides", [], "arms.d: a derived arm (from + precise_bn) trains nothing"),
    ("arms.e", {"from": "d", "precise_bn": {"num_batches": 1}}, "arms.e.from: 'd' is itself derived"),
    ("compare.sets", [], "compare.sets: expected a non-empty list"),
    ("compare.metrics", {"SOP": ["recall@1"]}, "compare.metrics: a mapping must name exactly the sets"),
    ("compare.pairs.0.arms", ["a"], "compare.pairs.0.arms: expected [a, b]"),
    ("compare.pairs.0.arms", ["a", "x"], "compare.pairs.0.arms: unknown arm 'x'"),
    ("compare.pairs.0.arms", ["a", "a"], "compare.pairs.0.arms: ['a', 'a']: an arm differenced with itself"),
    ("compare.pairs.0.claim", "bigger", "compare.pairs.0.claim: 'bigger'; expected one of ['greater', 'less']"),
    ("compare.extra", 1, "compare: unknown key(s) ['extra']"),
])
def test_schema_errors_name_the_key(tmp_path, key, value, message):
    raw = copy.deepcopy(EXP)
    _set(raw, key, value)
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, raw))
    assert message in str(e.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment(str(tmp_path / "none.yaml"))
    (tmp_path / "bad.yaml").write_text("base: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_experiment(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("key, value, extra, message", [
    ("compare.sets", ["Market", "SOP"], [], "compare.sets: ['Market'] is a test set of no arm's config; "
                                            "the arms' test sets: a: ['lfw', "),
    ("arms.b.overrides", ["Global.nope=1"], [], "arms.b (seed 3)"),
    ("overrides", [], ["Global.output_dir=x"], "-o Global.output_dir=x: Global.output_dir is set by the study"),
])
def test_planning_checks_the_configs_before_anything_runs(tmp_path, key, value, extra, message):
    raw = copy.deepcopy(EXP)
    _set(raw, key, value)
    with pytest.raises(ConfigError) as e:
        plan_runs(load_experiment(write(tmp_path, raw)), str(tmp_path / "s"), extra)
    assert message in str(e.value)


def only(task):
    """The overrides that drop every task of the quickstart but ``task``."""
    return [f"Tasks.{t}=null" for t in ("face", "person", "vehicle", "product") if t != task]


PERSON = ["Market1501", "DukeMTMC", "MSMT17"]
VEHICLE = ["VeRi776", "VehicleID-2400", "VeRiWild-10000"]
SINGLE = {"base": QUICKSTART, "overrides": ["Global.max_iters=4", "Tasks.person.batch_size=8"], "seeds": [0, 1],
          "arms": {"multi": {"overrides": []}, "p": {"overrides": only("person")},
                   "s": {"overrides": only("product")}, "pd": {"from": "p", "precise_bn": {"num_batches": 2}}},
          "compare": {"sets": ["SOP", "Market1501"], "metrics": ["rank1", "recall@1"],
                      "pairs": [{"arms": ["multi", "p"], "claim": "greater"},
                                {"arms": ["multi", "s"], "claim": "greater"}]}}


def test_single_task_arms_score_the_compared_sets_their_config_holds(tmp_path):
    exp = load_experiment(write(tmp_path, SINGLE))
    runs = plan_runs(exp, str(tmp_path / "s"))
    # in compare.sets order (SOP first), not the config's; a derived arm holds its source's sets
    assert [(r.arm, r.seed, r.sets) for r in runs] == [
        (arm, seed, sets) for seed in (0, 1) for arm, sets in
        [("multi", ["SOP", "Market1501"]), ("p", ["Market1501"]), ("s", ["SOP"]), ("pd", ["Market1501"])]]
    assert all(run_spec(r, r.sets, 2)["sets"] == r.sets for r in runs)
    p = load_config(runs[1].base, runs[1].overrides)
    assert list(p["Tasks"]) == ["person"] and p["Tasks"]["person"]["batch_size"] == 8
    assert list(load_config(runs[2].base, runs[2].overrides)["Tasks"]) == ["product"]
    # a finished run stays valid: the identity is the config's, whatever other arms the study has
    alone = copy.deepcopy(SINGLE)
    alone["arms"] = {"multi": {"overrides": []}}
    alone["compare"] = {"sets": ["Market1501"], "metrics": ["rank1"]}
    assert plan_runs(load_experiment(write(tmp_path, alone, "alone.yaml")), str(tmp_path / "s"))[0].identity \
        == runs[0].identity
    assert len({r.identity for r in runs}) == len(runs)


@pytest.mark.parametrize("change, message", [
    ({"compare.sets": ["SOP", "Market"]},  # a typo is held by no arm
     "exp.yaml: compare.sets: ['Market'] is a test set of no arm's config; the arms' test sets: "
     f"multi: ['lfw', 'cplfw', 'calfw', 'cfp_ff', 'cfp_fp', 'agedb_30', {str(PERSON)[1:-1]}, {str(VEHICLE)[1:-1]}, "
     f"'SOP']; p: {PERSON}; s: ['SOP']"),
    ({"arms.v": {"overrides": only("vehicle")}},
     f"exp.yaml: compare.sets: arm v holds none of ['SOP', 'Market1501']; its test sets: {VEHICLE}"),
    ({"arms.p.overrides": only("vehicle")},  # the derived arm pd holds nothing either; p is named first
     f"exp.yaml: compare.sets: arm p holds none of ['SOP', 'Market1501']; its test sets: {VEHICLE}"),
    ({"compare.pairs": [{"arms": ["multi", "s"], "claim": "greater"}, {"arms": ["pd", "s"], "claim": "less"}]},
     "exp.yaml: compare.pairs.1: arms pd and s share no compared set (pd holds ['Market1501'], s holds ['SOP'] "
     f"of compare.sets ['SOP', 'Market1501']); test sets: pd: {PERSON}; s: ['SOP']"),
])
def test_compared_sets_each_arm_holds_are_checked_before_anything_runs(tmp_path, change, message):
    raw = copy.deepcopy(SINGLE)
    for k, v in change.items():
        _set(raw, k, v)
    with pytest.raises(ConfigError) as e:
        plan_runs(load_experiment(write(tmp_path, raw)), str(tmp_path / "s"))
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "s")


SCORES = {"Market1501": {"rank1": 0.5, "mAP": 0.4, "score": 0.5}, "SOP": {"recall@1": 0.3, "score": 0.3}}


@pytest.mark.parametrize("metrics, want", [
    (["rank1", "recall@1"], [("Market1501", "rank1"), ("SOP", "recall@1")]),
    (["score", "mAP"], [("Market1501", "score"), ("Market1501", "mAP"), ("SOP", "score")]),
    ({"Market1501": ["mAP"], "SOP": ["recall@1", "score"]},
     [("Market1501", "mAP"), ("SOP", "recall@1"), ("SOP", "score")]),
])
def test_compared_cells(tmp_path, metrics, want):
    raw = copy.deepcopy(EXP)
    raw["compare"]["metrics"] = metrics
    assert select_cells(load_experiment(write(tmp_path, raw)), SCORES) == want


@pytest.mark.parametrize("metrics, message", [
    (["rank1", "accuracy"], "compare.metrics: metric(s) ['accuracy'] are in no compared set's result"),
    (["rank1"], "compare.metrics: set(s) ['SOP'] have none of the metrics"),
    ({"Market1501": ["mAP"], "SOP": ["recall@5"]}, "compare.metrics.SOP: ['recall@5'] not in the result of set SOP"),
])
def test_metrics_missing_from_a_result_name_the_key(tmp_path, metrics, message):
    raw = copy.deepcopy(EXP)
    raw["compare"]["metrics"] = metrics
    with pytest.raises(ConfigError) as e:
        select_cells(load_experiment(write(tmp_path, raw)), SCORES)
    assert message in str(e.value)
    with pytest.raises(ConfigError, match=r"compare.sets: runs/a/seed_3 has no scores for \['SOP'\]"):
        select_cells(load_experiment(write(tmp_path, EXP)), {"Market1501": SCORES["Market1501"]},
                     where="runs/a/seed_3")


def test_a_run_holding_some_sets_is_checked_on_those(tmp_path):
    raw = copy.deepcopy(EXP)
    raw["compare"]["metrics"] = ["rank1", "recall@1", "nope"]
    exp = load_experiment(write(tmp_path, raw))
    person, product = {"Market1501": SCORES["Market1501"]}, {"SOP": SCORES["SOP"]}
    assert select_cells(exp, person, sets=["Market1501"]) == [("Market1501", "rank1")]
    metrics_found(exp, [person])  # the runs so far cover Market1501 only: "nope" may be SOP's
    with pytest.raises(ConfigError, match=r"compare.metrics: metric\(s\) \['nope'\] are in no compared set's result"):
        metrics_found(exp, [person, product])
    with pytest.raises(ConfigError, match=r"compare.sets: runs/p/seed_0 has no scores for \['Market1501'\]"):
        select_cells(exp, product, where="runs/p/seed_0", sets=["Market1501"])  # a set its config holds


@pytest.mark.parametrize("argv", [[], ["a.yaml", "-c", "b.yaml"]])
def test_the_cli_takes_the_experiment_file_exactly_once(argv, capsys):
    from ppufo.cli.ablate import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "give the experiment file once: ppufo-ablate -c" in capsys.readouterr().err


def test_the_cli_reads_the_experiment_from_c_as_the_other_tools(tmp_path):
    from ppufo.cli.ablate import main
    with pytest.raises(SystemExit) as e:
        main(["-c", str(tmp_path / "missing.yaml"), "--dry-run"])
    assert str(e.value.code) == f"error: experiment file not found: {tmp_path / 'missing.yaml'}"
