"""ppufo-ablate end to end: configs/ablations/example_tiny.yaml (2 arms x 2 seeds) on the test
session's demo data, two runs at a time, then resumed after a run lost its result."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT

EXAMPLE = "configs/ablations/example_tiny.yaml"


def ablate(out, demo_root, *extra):
    cmd = [sys.executable, "tools/ablate.py", "-c", EXAMPLE, "--out", str(out), *extra,
           "-o", f"Global.data_root={demo_root}", "Global.generate_demo_data=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_example_study_end_to_end_and_resumed(demo_root, tmp_path):
    out = tmp_path / "study"
    proc = ablate(out, demo_root, "--parallel", "2")
    assert proc.stdout == (out / "table.md").read_text()
    assert "| Market1501 | rank1 | hetero - homo | greater |" in proc.stdout
    assert "Runs finished: 4 of 4." in proc.stdout and "seeds 0, 1;" in proc.stdout
    assert "[4/4] arm=homo seed=1 started" in proc.stderr and "study ETA" in proc.stderr
    table = json.loads((out / "table.json").read_text())
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for arm in ("hetero", "homo"):
        for seed in (0, 1):
            d = out / "runs" / arm / f"seed_{seed}"
            assert {"train.log", "worker.log", "result.json", "config.yaml", "latest", "iter_4.pdparams"} <= set(os.listdir(d))
            cfg = yaml.safe_load((d / "config.yaml").read_text())["Global"]
            assert (cfg["seed"], cfg["output_dir"], cfg["cpu_threads"], cfg["max_iters"]) == (seed, str(d), threads, 4)
            market = json.loads((d / "eval_iter_4.json").read_text())["sets"][0]
            assert market["set"] == "Market1501"
            cells = table["arms"][arm]["cells"]
            assert cells["Market1501/rank1"]["values"][str(seed)] == market["rank1"]
            assert cells["Market1501/mAP"]["values"][str(seed)] == market["mAP"]
    mAPs = [table["arms"][a]["cells"]["Market1501/mAP"]["values"][s] for a in ("hetero", "homo") for s in "01"]
    assert len(set(mAPs)) == 4  # every arm and seed trained its own model
    pair = table["pairs"][0]["cells"]["Market1501/mAP"]
    assert pair["diffs"] == pytest.approx([mAPs[0] - mAPs[2], mAPs[1] - mAPs[3]])
    assert table["compute"]["hetero"]["images_per_task"] == {"face": 32, "person": 32, "vehicle": 32, "product": 32}
    assert table["compute"]["homo"]["images_per_task"] == {"face": 8, "person": 8, "vehicle": 8, "product": 8}
    assert table["compute"]["homo"]["steps"] == [4]
    assert (out / "plot.png").stat().st_size > 10_000

    # a worker killed mid-run leaves its folder without result.json: only that run is done again
    lost = out / "runs" / "homo" / "seed_1"
    os.remove(lost / "result.json")
    kept = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed_*/result.json")}
    proc = ablate(out, demo_root, "--parallel", "2")
    assert "3 already finished, 1 to run" in proc.stderr and "deleting the interrupted run in runs/homo/seed_1" in proc.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()) and (lost / "result.json").is_file()
    again = json.loads((out / "table.json").read_text())
    assert again["arms"] == table["arms"] and again["pairs"] == table["pairs"]

    proc = ablate(out, demo_root, "--report-only")
    assert "started" not in proc.stderr and json.loads((out / "table.json").read_text())["arms"] == table["arms"]
