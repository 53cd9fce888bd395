"""Quantised subnets as search candidates: scored in simulated int8, timed from the int8 chip's table,
chosen against the float ones on the same budget, marked in the result and the Pareto plot."""
import json
import os

import numpy as np
import paddle
import pytest

from helpers import tiny_supernet_config
from ppufo.nas.budget import Budget
from ppufo.nas.latency_table import geometry, required_entries, write_table
from ppufo.utils.errors import ConfigError
from ppufo.utils.logger import get_logger

FAST_INT8 = 0.5  # the int8 test table: every entry half the float one


def write_tables(space, image_shape, folder):
    """Test tables of cpu_x86 and cpu_x86_int8 for the tiny space, as "<folder>/{chip}.json"."""
    need = required_entries(space)
    for chip, k in (("cpu_x86", 1.0), ("cpu_x86_int8", FAST_INT8)):
        write_table(chip, {"geometry": geometry(space, image_shape, 1), "provenance": {"measured": True, "how": "test"},
                           "stem": 0.2 * k, "attention": {str(h): 0.1 * h * k for h in need["attention"]},
                           "ffn": {str(m): m / 500 * k for m in need["ffn"]}}, os.path.join(folder, f"{chip}.json"))
    return os.path.join(folder, "{chip}.json")


@pytest.fixture(scope="module")
def searched(demo_root, tmp_path_factory):
    """A tiny supernet searched with int8 candidates on cpu_x86 (latency budget, test tables)."""
    from ppufo.arch import build_model
    from ppufo.arch.trained import load_trained_model
    from ppufo.nas.configured import run_search, write_result
    from ppufo.utils.checkpoint import save_checkpoint
    tmp = tmp_path_factory.mktemp("int8search")
    paddle.seed(0)
    model = build_model(tiny_supernet_config(demo_root, tmp), {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    save_checkpoint(str(tmp / "super"), model, states={"iteration": 0})
    tables = write_tables(model.space, [3, 32, 32], str(tmp / "tables"))
    largest = model.space.largest()
    cfg = tiny_supernet_config(demo_root, tmp, f"Global.pretrained_model={tmp}/super", "Search.val_sets=null",
                               "Search.int8_candidates=true", f"Search.latency_table={tables}",
                               "Search.num_samples=5", "Search.num_candidates=50", "Search.num_verify=2",
                               "Search.verify_rounds=1", "Search.calibration_images=16", "Quant.num_images=16",
                               "Quant.batch_size=8", f"Search.cache_dir={tmp}/cache", f"Search.save_dir={tmp}/search")
    supernet = load_trained_model(cfg)
    from ppufo.nas.latency import TableLatency
    full = TableLatency("cpu_x86", supernet.space, [3, 32, 32], 1, tables.replace("{chip}", "cpu_x86"))(largest)
    cfg["Search"]["budget"] = 0.8 * full  # the largest float subnet is over budget, its int8 version within
    res = run_search(cfg, supernet, ["person"], get_logger())["person"]
    path = write_result(cfg, supernet.space, res, cfg["Search"]["save_dir"])
    return cfg, supernet, res, json.load(open(path)), path, tmp


def test_both_precisions_are_searched_on_one_budget_and_the_more_accurate_is_chosen(searched):
    cfg, supernet, res, out, path, tmp = searched
    by = res["by_precision"]
    assert list(by) == ["float", "int8"] and by["float"]["chip"] == "cpu_x86" and by["int8"]["chip"] == "cpu_x86_int8"
    assert by["float"]["budget"] is by["int8"]["budget"]  # resolved once, on the float chip
    found = {p: r["measured"]["accuracy"] for p, r in by.items() if r["subnet"] is not None}
    assert found and res["measured"]["accuracy"] == max(found.values())
    assert res["precision"] == max(found, key=lambda p: (found[p], p == "float"))
    for p, r in by.items():  # each side's own cost is its own chip's table
        for c, _ in r["points"]["measured"]:
            assert c > 0
    f_costs = sorted(c for c, _ in by["float"]["points"]["measured"])
    i_costs = sorted(c for c, _ in by["int8"]["points"]["measured"])
    assert i_costs[0] == pytest.approx(FAST_INT8 * f_costs[0])  # both searches sample the smallest subnet
    assert out["precision"] == res["precision"] and out["chip"] == "cpu_x86"
    assert out["runtime"]["chip"] == res["chip"] and out["runtime"]["deploy_config"] == f"deploy/configs/{res['chip']}.yaml"
    assert set(out["by_precision"]) == {"float", "int8"}
    assert os.path.getsize(path.replace(".json", "_pareto.png")) > 10_000


def test_an_int8_candidates_accuracy_is_its_extracted_models_simulated_int8_score(searched):
    """The int8 cache holds the simulated accuracy; re-scoring one subnet by hand (extract, BN neck
    calibrated, fake quant, evaluate) gives the same number, and it differs from the float score."""
    from ppufo.engine.calibrate import neck_calibration
    from ppufo.engine.evaluator import Evaluator
    from ppufo.nas.cache import subnet_key
    from ppufo.nas.extract import extract
    from ppufo.slim.fake_quant import Int8Simulation
    cfg, supernet, res, out, path, tmp = searched
    lines = [json.loads(x) for x in open(tmp / "cache" / "accuracy_person_mAP_int8.jsonl").read().splitlines()]
    ctx = lines[0]["context"]
    assert ctx["int8"]["simulation"] == "fake_quant v1" and ctx["int8"]["images"] == 16
    float_lines = [json.loads(x) for x in open(tmp / "cache" / "accuracy_person_mAP.jsonl").read().splitlines()]
    floats = {r["key"]: r["value"] for r in float_lines[1:]}
    rec = lines[1]
    subnet = next(s for s in [supernet.space.largest(), supernet.space.smallest()]
                  if subnet_key(supernet.space, s) == rec["key"])
    cal = neck_calibration(cfg, "person", 16, cfg["Search"]["seed"])
    _, model = extract(cfg, supernet, ["person"], subnet, [cal])
    with Int8Simulation(cfg, "person")(model, "person"):
        got = Evaluator(cfg, model, only=["person"], progress=False).evaluate(tag="check")
    value = float(np.mean([r["mAP"] for r in got["sets"]]))
    assert value == pytest.approx(rec["value"], abs=1e-6)
    assert any(abs(r["value"] - floats[r["key"]]) > 1e-6 for r in lines[1:])  # int8 is not the float score again


def test_pick_precision_takes_the_more_accurate_and_float_on_a_tie():
    from ppufo.nas.configured import pick_precision
    b = Budget("latency_ms", 1.0)

    def r(p, acc, subnet="s"):
        return {"task": "person", "subnet": subnet, "budget": b, "precision": p, "cheapest": 0.5,
                "measured": {"accuracy": acc, "latency_ms": 0.9}}
    assert pick_precision({"float": r("float", 0.5), "int8": r("int8", 0.6)})["precision"] == "int8"
    assert pick_precision({"float": r("float", 0.6), "int8": r("int8", 0.6)})["precision"] == "float"
    assert pick_precision({"float": r("float", 0.9, None), "int8": r("int8", 0.1)})["precision"] == "int8"
    with pytest.raises(ConfigError, match=r"no measured subnet of person is within .* in float or int8 \(the "
                                          r"cheapest measured: float 0.5, int8 0.5\)"):
        pick_precision({"float": r("float", 0.9, None), "int8": r("int8", 0.1, None)})


@pytest.mark.parametrize("override, message", [
    (["Search.chip=gpu"], r"Search.int8_candidates: chip gpu has no int8 sibling; it applies to \['cpu_x86', "
                          r"'gpu_trt_fp16'\]"),
    (["Search.latency=measure"], "the int8 latency comes from the cpu_x86_int8 table; set Search.latency to table"),
    (["Search.latency_table=my.json"], r"Search.latency_table=my.json: Search.int8_candidates reads the tables of "
                                       r"cpu_x86 and cpu_x86_int8, one file each; write the path with \{chip\}"),
])
def test_int8_candidates_settings_that_cannot_work_are_named(demo_root, tmp_path, override, message):
    from ppufo.nas.configured import run_search
    cfg = tiny_supernet_config(demo_root, tmp_path, "Search.int8_candidates=true", "Search.budget=2", *override)
    with pytest.raises(ConfigError, match=message):
        run_search(cfg, None, ["person"], get_logger())
