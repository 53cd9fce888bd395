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
    ("arms.d.precise_bn", KeyError, "arms.d: a derived arm needs one of precise_bn: {num_batches: N} or search"),
    ("arms.d.search", {"task": "person", "budget": 1.0}, "arms.d: a derived arm needs one of precise_bn"),
    ("arms.d.precise_bn.num_batches", 0, "arms.d.precise_bn.num_batches: expected an integer >= 1"),
    ("arms.d.overrides", [], "arms.d: a derived arm (from + precise_bn or search) trains nothing"),
    ("arms.d.init_from", "a", "arms.d: ['init_from'] are keys of a trained arm"),
    ("arms.e", {"from": "d", "precise_bn": {"num_batches": 1}}, "arms.e.from: 'd' is itself derived"),
    ("compare.sets", [], "compare.sets: expected a non-empty list"),
    ("compare.metrics", {"SOP": ["recall@1"]}, "compare.metrics: a mapping must name exactly the sets"),
    ("compare.pairs.0.arms", ["a"], "compare.pairs.0.arms: expected [a, b]"),
    ("compare.pairs.0.arms", ["a", "x"], "compare.pairs.0.arms: unknown arm 'x'"),
    ("compare.pairs.0.arms", ["a", "a"], "compare.pairs.0.arms: ['a', 'a']: an arm differenced with itself"),
    ("compare.pairs.0.claim", "bigger", "compare.pairs.0.claim: 'bigger'; expected one of ['greater', 'less', 'no_worse']"),
    ("compare.pairs.0.margin", 0.01, "compare.pairs.0.margin: only a no_worse claim has a margin (claim: greater)"),
    # the keys of runs that start from other runs (sources.py) and of search arms (search_arm.py)
    ("arms.s", {"from": "a", "search": {"task": "person"}}, "arms.s.search.budget: required key is missing"),
    ("arms.s", {"from": "a", "search": {"task": "person", "budget": 1, "seed": 3}}, "arms.s.search.seed: set by the study"),
    ("arms.s", {"from": "a", "search": {"task": "person", "budget": 1, "nope": 1}}, "arms.s.search: unknown key 'nope'"),
    ("arms.s", {"from": "a", "search": {"task": "person,face", "budget": 1}},
     "arms.s.search.task: 'person,face'; expected one task name"),
    ("arms.s", {"from": "a", "search": [1]}, "arms.s.search: expected a mapping of Search keys"),
    ("arms.b.base", "nowhere.yaml", "arms.b.base: config file not found"),
    ("arms.b.init_from", "z", "arms.b.init_from: unknown arm 'z'"),
    ("arms.b.init_from", "b", "arms.b.init_from: an arm cannot start from itself"),
    ("arms.b.init_from", "d", "arms.b.init_from: 'd' is itself derived (it trains nothing); init_from takes"),
    ("arms.b.init_from", ["a"], "arms.b.init_from: expected an arm name"),
    ("arms.b.shape_from", "a", "arms.b.shape_from: 'a' is not a search arm"),
    ("arms.b.compute_of", [], "arms.b.compute_of: expected a non-empty list of names"),
    ("arms.b.compute_of", ["a", "d"], "arms.b.compute_of: 'd' is itself derived (it trains nothing); compute_of sums"),
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


@pytest.mark.parametrize("arms, message", [
    ({"a": {"init_from": "b"}, "b": {"compute_of": ["a"]}},
     "arms: a -> b -> a need each other (from / init_from / shape_from / compute_of)"),
    ({"a": {}, "b": {"init_from": "c"}, "c": {"compute_of": ["a", "c"]}}, "arms.c.compute_of: an arm cannot start from itself"),
    ({"a": {}, "s": {"from": "a", "search": {"task": "person", "budget": 1}},
      "b": {"init_from": "a", "shape_from": "s"}}, "arms.b: init_from and shape_from together"),
    ({"a": {}, "b": {"compute_of": ["a"], "overrides": ["Global.max_iters=9"]}},
     "arms.b.overrides: 'Global.max_iters=9': Global.max_iters is set by compute_of"),
    ({"a": {}, "s": {"from": "a", "search": {"task": "person", "budget": 1}},
      "b": {"shape_from": "s", "overrides": ["Arch.Backbone.depth=2"]}},
     "arms.b.overrides: 'Arch.Backbone.depth=2': Arch is set by shape_from"),
    ({"a": {}, "b": {"init_from": "a", "overrides": ["Global.pretrained_model=x"]}},
     "Global.pretrained_model is set by init_from"),
])
def test_sources_are_checked_together(tmp_path, arms, message):
    raw = dict(EXP, arms=arms, compare={"sets": ["Market1501"], "metrics": ["rank1"]})
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, raw))
    assert message in str(e.value)


def test_a_no_worse_claim_needs_a_margin(tmp_path):
    raw = copy.deepcopy(EXP)
    raw["compare"]["pairs"] = [{"arms": ["a", "b"], "claim": "no_worse"}]
    with pytest.raises(ConfigError, match=r"compare.pairs.0.margin: None; a no_worse claim needs margin"):
        load_experiment(write(tmp_path, raw))
    raw["compare"]["pairs"][0]["margin"] = 1.5
    with pytest.raises(ConfigError, match=r"compare.pairs.0.margin: 1.5; a no_worse claim needs margin"):
        load_experiment(write(tmp_path, raw))
    raw["compare"]["pairs"][0]["margin"] = 0.01
    pair = load_experiment(write(tmp_path, raw)).pairs[0]
    assert (pair.claim, pair.margin) == ("no_worse", 0.01)


SUPERNET = os.path.join(ROOT, "configs", "supernet_quickstart.yaml")
SEARCH = {"task": "person", "budget": {"params": 0.8}, "num_samples": 4}
CHAIN = {"base": QUICKSTART, "overrides": ["Global.max_iters=4", "Tasks.person.test_sets=[{name: Market1501, root: market1501}]"],
         "seeds": [0, 1],
         "arms": {"scratch": {"shape_from": "sub", "compute_of": ["allinone", "supernet"], "overrides": only("person")},
                  "sub": {"from": "supernet", "search": SEARCH},  # both listed before their sources
                  "allinone": {"overrides": []},
                  "supernet": {"base": "supernet_quickstart.yaml", "init_from": "allinone"}},
         "compare": {"sets": ["Market1501"], "metrics": ["rank1"],
                     "pairs": [{"arms": ["sub", "allinone"], "claim": "no_worse", "margin": 0.01},
                               {"arms": ["sub", "scratch"], "claim": "greater"}]}}


def chain(tmp_path, raw=CHAIN):
    (tmp_path / "supernet_quickstart.yaml").write_text(f"_BASE_: {SUPERNET}\n")  # an arm's base is relative too
    return load_experiment(write(tmp_path, raw))


def test_runs_start_after_the_runs_they_take_a_checkpoint_a_shape_or_a_compute_budget_from(tmp_path):
    from ppufo.ablation.sources import waiting_on
    study = str(tmp_path / "study")
    runs = plan_runs(chain(tmp_path), study)
    assert [(r.arm, r.seed, r.kind) for r in runs] == [
        (a, s, k) for s in (0, 1) for a, k in
        [("allinone", "train"), ("supernet", "train"), ("sub", "search"), ("scratch", "train")]]
    allinone, supernet, sub, scratch = runs[:4]
    assert supernet.base == str(tmp_path / "supernet_quickstart.yaml") and allinone.base == QUICKSTART
    assert supernet.overrides[-1] == f"Global.pretrained_model={study}/runs/allinone/seed_0/latest"
    assert load_config(supernet.base, supernet.overrides)["Arch"]["name"] == "SupernetMultiTaskModel"
    assert sub.source is supernet and sub.sets == ["Market1501"] and scratch.sets == ["Market1501"]
    assert scratch.needs == [sub, allinone, supernet] and supernet.needs == [allinone] and allinone.needs == []
    assert run_spec(scratch, scratch.sets, 2)["sources"] == {
        "shape_from": sub.run_dir, "compute_of": {"allinone": allinone.run_dir, "supernet": supernet.run_dir}}
    spec = run_spec(sub, sub.sets, 2)
    assert (spec["kind"], spec["source_dir"], spec["search"]) == ("search", supernet.run_dir, SEARCH)
    assert "sources" not in run_spec(allinone, allinone.sets, 2)
    # a failed allinone leaves its seed's other runs waiting, not the next seed's
    assert waiting_on(allinone, runs) == [supernet, sub, scratch]
    assert waiting_on(sub, runs) == [scratch]


def test_a_changed_source_changes_every_run_that_starts_from_it(tmp_path):
    ids = [r.identity for r in plan_runs(chain(tmp_path), str(tmp_path / "one"))]
    assert ids == [r.identity for r in plan_runs(chain(tmp_path), str(tmp_path / "two"))]  # a moved study matches
    raw = copy.deepcopy(CHAIN)
    raw["arms"]["allinone"]["overrides"] = ["Global.max_iters=5"]
    changed = [r.identity for r in plan_runs(chain(tmp_path, raw), str(tmp_path / "one"))]
    assert all(a != b for a, b in zip(ids, changed))  # allinone, then every run downstream of it
    raw = copy.deepcopy(CHAIN)
    raw["arms"]["sub"]["search"] = dict(SEARCH, num_samples=5)
    changed = [r.identity for r in plan_runs(chain(tmp_path, raw), str(tmp_path / "one"))]
    assert [a == b for a, b in zip(ids[:4], changed[:4])] == [True, True, False, False]


@pytest.mark.parametrize("change, message", [
    ({"arms.sub.from": "allinone"}, "arms.sub.from: allinone trains Arch.name MultiTaskModel; a search arm needs a supernet arm"),
    ({"arms.sub.search": dict(SEARCH, num_samples=0)}, "Search.num_samples: 0 is out of range"),
    ({"arms.sub.search": dict(SEARCH, task="nope")}, "arms.sub.search (seed 0): task 'nope' is not a task of supernet"),
])
def test_a_search_arm_is_checked_against_its_source_when_planned(tmp_path, change, message):
    raw = copy.deepcopy(CHAIN)
    for k, v in change.items():
        _set(raw, k, v)
    with pytest.raises(ConfigError) as e:
        plan_runs(chain(tmp_path, raw), str(tmp_path / "s"))
    assert message in str(e.value)
