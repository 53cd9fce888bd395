"""The TIPC lite_train_lite_infer chain end to end: prepare -> train -> eval -> export -> infer -> compare."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, git_clone

TXT = os.path.join(ROOT, "test_tipc", "configs", "ufo_quickstart_tiny", "train_infer_python.txt")
MODE = "lite_train_lite_infer"


def run(script, txt, env, mode=MODE, root=ROOT):
    return subprocess.run(["bash", os.path.join(root, "test_tipc", script), str(txt), mode], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_lite_chain_runs_and_inference_matches_dygraph(tmp_path):
    """The chain as a user runs it: in a git clone in a new folder, its data and output at their defaults."""
    from pathlib import Path
    clone, env = git_clone(tmp_path / "clone")
    txt = os.path.relpath(TXT, ROOT)
    for script in ("prepare.sh", "test_train_inference_python.sh"):
        proc = run(script, txt, env, root=clone)
        assert proc.returncode == 0, (script, proc.stdout[-3000:], proc.stderr[-3000:])
    assert os.path.isfile(os.path.join(clone, "data", "tipc_demo", ".complete"))  # the chain's default data root
    out = Path(clone) / "test_tipc" / "output" / "ufo_quickstart_tiny" / MODE
    lines = (out / "results_python.log").read_text().splitlines()
    assert all(line.startswith("Run successfully with command - ufo_quickstart_tiny - ") for line in lines), lines
    scripts = [line.split(" - ")[2].split()[1] for line in lines]
    assert scripts == ["tools/train.py", "tools/eval.py", "tools/export_model.py"] + \
        ["deploy/python/predict_rec.py", "test_tipc/compare_features.py"] * 2  # oneDNN on, then off
    assert "Global.enable_mkldnn=True" in lines[3] and "Global.enable_mkldnn=False" in lines[5]
    compared = []
    for name in sorted(os.listdir(out)):
        if name.startswith("compare_"):
            text = (out / name).read_text()
            m = re.search(r"PASS: 32 images, max \|inference - dygraph\| = (\S+)", text)
            assert m, text[-2000:]
            compared.append(float(m.group(1)))
    assert len(compared) == 2 and max(compared) <= 1e-4
    # the compare step fails on features that are off by more than atol
    run_dir = out / "norm_train_gpus_-1_amp_False"
    feats = sorted(out.glob("infer_*mkldnn_True*.npz"))[0]
    saved = np.load(feats)
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=saved["features"] + 1e-3, paths=saved["paths"])
    proc = subprocess.run([sys.executable, "test_tipc/compare_features.py", "-c", str(run_dir / "config.yaml"),
                           "-o", f"Global.pretrained_model={run_dir / 'latest'}", "--task", "person",
                           "--features", str(bad)], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "FAIL: 32 images" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_chain_rejects_a_misplaced_line_and_unknown_mode(tmp_path):
    with open(TXT) as f:
        lines = f.read().splitlines()
    lines[29], lines[30] = lines[30], lines[29]  # norm_export moved down one line
    txt = tmp_path / "train_infer_python.txt"
    txt.write_text("\n".join(lines) + "\n")
    proc = run("test_train_inference_python.sh", txt, dict(os.environ, TIPC_OUTPUT=str(tmp_path)))
    assert proc.returncode == 2 and "line 30: expected key 'norm_export', got 'quant_export:null'" in proc.stderr
    proc = run("test_train_inference_python.sh", TXT, dict(os.environ, TIPC_OUTPUT=str(tmp_path)), mode="whole_infer")
    assert proc.returncode == 2 and "MODE one of: lite_train_lite_infer whole_train_whole_infer" in proc.stderr
