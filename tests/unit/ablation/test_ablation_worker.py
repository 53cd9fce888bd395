"""The worker in-process at tiny size: a trained run scored once at its final iteration, and a
derived run (precise BN) on that run's checkpoint."""
import json
import os
import sys
import types

import numpy as np
import paddle
import pytest
import yaml

from helpers import ROOT
from ppufo.ablation import worker
from ppufo.ablation.experiment import load_experiment, plan_runs, run_spec
from ppufo.io.weights import weights_file
from ppufo.utils.errors import ConfigError

TINY = ["Global.generate_demo_data=false", "Global.image_shape=[3,32,32]",
        "DataLoader.Train.transforms.0.Resize.size=[32,32]", "Global.max_iters=3", "Global.log_interval=1",
        "Global.save_interval=0", "Arch.Backbone.depth=2", "DataLoader.Train.num_workers=0",
        "DataLoader.Eval.num_workers=0", "Tasks.face.batch_size=8", "Tasks.person.batch_size=8",
        "Tasks.vehicle.batch_size=8", "Tasks.product.batch_size=8"]
SETS = ["Market1501", "SOP"]


def plan(tmp, demo_root, sets=SETS):
    raw = {"base": os.path.join(ROOT, "configs", "quickstart.yaml"), "seeds": [0],
           "overrides": TINY + [f"Global.data_root={demo_root}"],
           "arms": {"homo": {"overrides": ["DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler"]},
                    "pbn": {"from": "homo", "precise_bn": {"num_batches": 5}}},
           "compare": {"sets": sets, "metrics": ["rank1", "mAP", "recall@1"]}}
    (tmp / "exp.yaml").write_text(yaml.safe_dump(raw))
    return plan_runs(load_experiment(str(tmp / "exp.yaml")), str(tmp / "study"))


def run(run_, sets=SETS):
    os.makedirs(run_.run_dir, exist_ok=True)
    path = os.path.join(run_.run_dir, "spec.json")
    worker.write_json_atomic(path, run_spec(run_, sets, 2))
    return worker.run(path)


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    runs = plan(tmp_path_factory.mktemp("ablation_worker"), demo_root)
    return runs, run(runs[0])


def test_a_trained_run_is_scored_once_at_its_final_iteration(trained):
    runs, result = trained
    d = runs[0].run_dir
    assert worker.read_result(d) == json.loads(json.dumps(result))
    assert result["iteration"] == 3 and result["steps"] == 3
    # homogeneous: steps 0, 1, 2 hold face, person, vehicle (8 images each); product never comes up
    assert result["images_per_task"] == {"face": 8, "person": 8, "vehicle": 8, "product": 0}
    files = sorted(os.listdir(d))
    assert [f for f in files if f.startswith("eval_")] == ["eval_iter_3.json"]  # once, at the end
    assert not any(f.startswith("best_model") or ".tmp" in f for f in files) and {"latest", "iter_3.pdparams"} <= set(files)
    summary = json.load(open(os.path.join(d, "eval_iter_3.json")))
    assert [s["set"] for s in summary["sets"]] == SETS  # only the compared sets
    market = summary["sets"][0]
    assert result["scores"]["Market1501"]["rank1"] == market["rank1"] and result["scores"]["SOP"]["recall@1"] == \
        summary["sets"][1]["recall@1"]
    assert result["scores"]["Market1501"]["mAP"] == market["mAP"] and "seconds" not in result["scores"]["SOP"]
    cfg = yaml.safe_load(open(result["config"]))
    assert cfg["Global"]["seed"] == 0 and cfg["Global"]["eval_interval"] == 0 and cfg["Global"]["cpu_threads"] == 2
    assert cfg["DataLoader"]["Train"]["batch_sampler"]["name"] == "HomogeneousBatchSampler"
    assert result["identity"] == runs[0].identity and result["kind"] == "train" and result["commit"]
    assert result["seconds"]["total"] >= result["seconds"]["train"] > 0
    assert os.path.isfile(os.path.join(d, "train.log"))


def stand_in(calls, perturb):
    def recompute_backbone_bn(model, config, num_batches, seed=0, log=None):
        calls.append({"num_batches": num_batches, "seed": seed, "state": {k: v.numpy().copy() for k, v in
                                                                           model.state_dict().items()}})
        if perturb:  # a post-step that changes the model: the scores must be taken after it
            paddle.seed(1)
            for p in model.backbone.parameters():
                p.set_value(paddle.randn(p.shape, dtype=p.dtype) * 0.5)
        return {"layers": 7, "batches": num_batches, "images": 96}
    return types.SimpleNamespace(recompute_backbone_bn=recompute_backbone_bn)


@pytest.mark.parametrize("perturb", [False, True])
def test_a_derived_run_scores_the_source_checkpoint_after_its_post_step(trained, monkeypatch, perturb):
    runs, source = trained
    calls = []
    monkeypatch.setitem(sys.modules, "ppufo.engine.precise_bn", stand_in(calls, perturb))
    result = run(runs[1])
    assert [(c["num_batches"], c["seed"]) for c in calls] == [(5, 0)]
    saved = paddle.load(weights_file(os.path.join(runs[0].run_dir, "latest")))
    assert all(np.array_equal(calls[0]["state"][k], np.asarray(v)) for k, v in saved.items())
    assert result["post_step"] == {"layers": 7, "batches": 5, "images": 96}
    assert (result["steps"], result["images_per_task"]) == (source["steps"], source["images_per_task"])
    assert result["source"] == runs[0].run_dir and result["kind"] == "precise_bn"
    assert os.path.isfile(os.path.join(runs[1].run_dir, "eval_precise_bn.json"))
    if perturb:
        assert result["scores"]["Market1501"]["mAP"] != source["scores"]["Market1501"]["mAP"]
    else:
        assert result["scores"] == source["scores"]


def test_precise_bn_on_a_vit_changes_nothing(trained):
    pytest.importorskip("ppufo.engine.precise_bn")
    runs, source = trained
    result = run(runs[1])
    assert result["post_step"]["layers"] == 0 and result["scores"] == source["scores"]


def test_a_single_task_run_scores_the_compared_sets_its_config_holds(demo_root, tmp_path):
    raw = {"base": os.path.join(ROOT, "configs", "quickstart.yaml"), "seeds": [0],
           "overrides": TINY + [f"Global.data_root={demo_root}", "Global.max_iters=2"],
           "arms": {"person_only": {"overrides": ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"]},
                    "multi": {"overrides": []}},
           "compare": {"sets": SETS, "metrics": ["rank1", "recall@1"]}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    runs = {r.arm: r for r in plan_runs(load_experiment(str(tmp_path / "exp.yaml")), str(tmp_path / "study"))}
    assert (runs["person_only"].sets, runs["multi"].sets) == (["Market1501"], SETS)
    result = run(runs["person_only"], runs["person_only"].sets)
    assert list(result["scores"]) == ["Market1501"] and result["images_per_task"] == {"person": 16}
    summary = json.load(open(result["eval_json"]))
    assert [s["set"] for s in summary["sets"]] == ["Market1501"]


def test_a_failing_run_writes_no_result(demo_root, tmp_path):
    runs = plan(tmp_path, demo_root)
    with pytest.raises(ConfigError, match=r"unknown test set\(s\) \['nope'\]"):
        run(runs[0], sets=["nope"])
    assert worker.read_result(runs[0].run_dir) is None and not worker.running_pid(runs[0].run_dir)
