"""What a run takes from its sources when it starts: the extracted subnet's shape (shape_from) and
the steps that spend the sources' training FLOPs (compute_of); from run folders written here."""
import json
import os

import pytest

from helpers import ROOT
from ppufo.ablation.sources import at_start, compute_iters
from ppufo.ablation.results import write_json_atomic
from ppufo.arch.backbone.vit import vit_flops
from ppufo.utils.config import dump_config, load_config
from ppufo.utils.errors import ConfigError

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
PERSON_ONLY = ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"]
# what extraction writes for a depth-2 subnet: heads 3 and 2 (of 64), MLP 768 and 384 (a mix block)
SUBNET_BACKBONE = {"name": "VisionTransformer", "patch_size": 16, "in_chans": 3, "embed_dim": 192, "depth": 2,
                   "num_heads": 3, "head_dim": 64, "qkv_bias": True, "block_heads": [3, 2],
                   "block_mlp_hidden": [768, 384], "drop_path_rate": 0.0}
# its training FLOPs per step: person's 16 images a step at 64x64 (16 patches), forward x 3
PER_STEP = 3 * 16 * vit_flops(192, 16, 16, [(192, 768), (128, 384)])


@pytest.mark.parametrize("total, per_step, want", [(100, 30, 3), (100, 40, 3), (100, 41, 2), (1, 1e9, 1)])
def test_compute_iters_rounds_to_the_nearest_step_and_runs_at_least_one(total, per_step, want):
    assert compute_iters(total, per_step) == want


def finished(path, **result):
    os.makedirs(path, exist_ok=True)
    write_json_atomic(os.path.join(path, "result.json"), {"kind": "train", **result})
    return str(path)


@pytest.fixture
def search_run(tmp_path):
    """A finished search run folder: result.json and the extracted model's subnet/config.yaml."""
    path = finished(tmp_path / "search", kind="search")
    cfg = load_config(QUICKSTART, PERSON_ONLY)
    cfg["Arch"] = {"name": "MultiTaskModel", "Backbone": SUBNET_BACKBONE}
    dump_config(cfg, os.path.join(path, "subnet", "config.yaml"))
    return path


def test_a_run_takes_the_subnets_shape_and_the_steps_of_its_sources_compute(tmp_path, search_run):
    a = finished(tmp_path / "a", train_flops=4.0 * PER_STEP)
    b = finished(tmp_path / "b", train_flops=6.6 * PER_STEP)
    spec = {"base": QUICKSTART, "overrides": PERSON_ONLY,
            "sources": {"shape_from": search_run, "compute_of": {"a": a, "b": b}}}
    extra, taken = at_start(spec)
    arch = json.loads(extra[0][len("Arch="):])
    assert arch["name"] == "MultiTaskModel"
    assert {k: arch["Backbone"][k] for k in ("depth", "block_heads", "block_mlp_hidden", "head_dim")} == \
        {"depth": 2, "block_heads": [3, 2], "block_mlp_hidden": [768, 384], "head_dim": 64}
    assert arch["Backbone"]["drop_path_rate"] == 0.1  # the run's own (quickstart), not the file's 0.0
    assert extra[1] == "Global.max_iters=11"  # 10.6 steps of the shaped person-only model
    assert taken["compute_of"] == {"train_flops": {"a": 4.0 * PER_STEP, "b": 6.6 * PER_STEP},
                                   "total": 10.6 * PER_STEP, "flops_per_step": PER_STEP, "max_iters": 11}
    cfg = load_config(QUICKSTART, PERSON_ONLY + extra)  # the overrides load as a config
    assert cfg["Global"]["max_iters"] == 11 and cfg["Arch"]["Backbone"]["block_heads"] == [3, 2]


def test_compute_of_alone_plans_the_runs_own_model(tmp_path):
    a = finished(tmp_path / "a", train_flops=1e12)
    extra, _ = at_start({"base": QUICKSTART, "overrides": [], "sources": {"compute_of": {"a": a}}})
    per_step = 3 * 80 * vit_flops(192, 16, 16, [(192, 768)] * 6)  # quickstart: 4 tasks, 80 images a step
    assert extra == [f"Global.max_iters={compute_iters(1e12, per_step)}"]


def test_a_source_without_a_result_or_a_flop_count_is_an_error(tmp_path, search_run):
    spec = {"base": QUICKSTART, "overrides": PERSON_ONLY, "sources": {"compute_of": {"a": str(tmp_path / "none")}}}
    with pytest.raises(ConfigError, match=r"compute_of: a: the source run .*none has not finished \(no result.json\)"):
        at_start(spec)
    spec["sources"]["compute_of"]["a"] = finished(tmp_path / "cnn", train_flops=None)
    with pytest.raises(ConfigError, match=r"compute_of: a \(.*cnn\) recorded no train_flops"):
        at_start(spec)
    with pytest.raises(ConfigError, match=r"shape_from: the source run .*nowhere has not finished"):
        at_start({"base": QUICKSTART, "overrides": [], "sources": {"shape_from": str(tmp_path / "nowhere")}})
