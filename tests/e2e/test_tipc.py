"""The TIPC lite_train_lite_infer chains end to end: prepare -> train -> eval -> export -> infer -> compare,
and the post-training-quantised one: ... -> export -> quantize -> int8 infer -> cosine compare."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, git_clone

TXT = os.path.join(ROOT, "test_tipc", "configs", "ufo_quickstart_tiny", "train_infer_python.txt")
PTQ_TXT = os.path.join(ROOT, "test_tipc", "configs", "ufo_quickstart_tiny", "train_ptq_infer_python.txt")
MODE = "lite_train_lite_infer"
# lines (0-based) where the PTQ chain's txt differs from the float one's: model_name, kl_quant,
# infer_quant, inference (the int8 chip's deploy config), oneDNN (int8 needs it), precision,
# model_dir (the <task>_int8 folder), compare (cosine instead of atol)
PTQ_LINES = [1, 33, 38, 39, 41, 45, 46, 50]


def run(script, txt, env, mode=MODE, root=ROOT):
    return subprocess.run(["bash", os.path.join(root, "test_tipc", script), str(txt), mode], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """(folder, environment): a git clone in a new folder with the chains' demo data prepared, as a
    user runs them (data and output at their defaults)."""
    folder, env = git_clone(tmp_path_factory.mktemp("tipc") / "clone")
    proc = run("prepare.sh", os.path.relpath(TXT, ROOT), env, root=folder)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return folder, env


@pytest.mark.slow
def test_lite_chain_runs_and_inference_matches_dygraph(clone, tmp_path):
    from pathlib import Path
    clone, env = clone
    txt = os.path.relpath(TXT, ROOT)
    proc = run("test_train_inference_python.sh", txt, env, root=clone)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
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


@pytest.mark.slow
def test_ptq_chain_runs_int8_inference_within_the_stated_cosine_of_the_float_model(clone, tmp_path):
    """train -> eval -> export -> ppufo-quantize -> predict_rec on the int8 model with the int8 chip's
    deploy config -> its features against the training code's float ones, by cosine."""
    import json
    from pathlib import Path
    clone, env = clone
    with open(TXT) as f, open(PTQ_TXT) as g:
        plain, ptq = f.read().splitlines(), g.read().splitlines()
    assert len(plain) == len(ptq) and [i for i, (a, b) in enumerate(zip(plain, ptq)) if a != b] == PTQ_LINES
    txt = os.path.relpath(PTQ_TXT, ROOT)
    for script in ("prepare.sh", "test_train_inference_python.sh"):  # prepare: the data is there already
        proc = run(script, txt, env, root=clone)
        assert proc.returncode == 0, (script, proc.stdout[-3000:], proc.stderr[-3000:])
    out = Path(clone) / "test_tipc" / "output" / "ufo_quickstart_tiny_ptq" / MODE
    lines = (out / "results_python.log").read_text().splitlines()
    assert all(line.startswith("Run successfully with command - ufo_quickstart_tiny_ptq - ") for line in lines), lines
    scripts = [line.split(" - ")[2].split()[1] for line in lines]
    assert scripts == ["tools/train.py", "tools/eval.py", "tools/export_model.py", "tools/quantize.py",
                       "deploy/python/predict_rec.py", "test_tipc/compare_features.py"]
    assert "cpu_x86_int8.yaml" in lines[4] and "Global.precision=int8" in lines[4] and "person_int8" in lines[4]
    # oneDNN's int8 fc ran every Linear of the 2 blocks (qkv, proj, fc1, fc2): Paddle's pass statistics
    infer_log = next(out.glob("infer_*_int8.log")).read_text()
    assert re.findall(r"quantized (\d+) fc ops(?! with)", infer_log) == ["8"], infer_log[-2000:]
    text = next(out.glob("compare_*_int8.log")).read_text()
    m = re.search(r"PASS: 32 images, cosine to dygraph mean (\S+), min (\S+) \(min mean 0.99, min each 0.98\); "
                  r"max \|inference - dygraph\| = (\S+)", text)
    assert m, text[-2000:]
    mean, low, diff = map(float, m.groups())
    assert low >= 0.98 and diff > 1e-3  # int8: close, and not the float model run again
    # The txt's tolerance covers both modes (200 iterations: mean 0.9950-0.9978 over 4 seeds). This
    # lite chain measured 0.99949-0.99959 over 6 training seeds, and 0.9964-0.9977 with per-channel
    # weight scales (Paddle's square-weight bug, docs/notes/quantization.md): held to its own level.
    assert 0.999 <= mean < 1 - 1e-5, mean
    run_dir = out / "norm_train_gpus_-1_amp_False"
    with open(run_dir / "inference" / "person_int8" / "quant_report.json") as f:
        report = json.load(f)  # ppufo-quantize's own report of the same model: cosine on the test sets
    assert report["cosine"]["on"] == "test-set images" and report["cosine"]["mean"] >= 0.99
    # the compare step fails on features further from the float ones than the stated tolerance
    saved = np.load(next(out.glob("infer_*_int8.npz")))
    bad = tmp_path / "bad.npz"
    noisy = saved["features"] + np.random.RandomState(0).normal(0, 0.03, saved["features"].shape)  # cosine ~0.95
    np.savez(bad, features=noisy.astype(np.float32), paths=saved["paths"])
    proc = subprocess.run([sys.executable, "test_tipc/compare_features.py", "-c", str(run_dir / "config.yaml"),
                           "-o", f"Global.pretrained_model={run_dir / 'latest'}", "--task", "person",
                           "--features", str(bad), "--min_mean_cosine", "0.99", "--min_cosine", "0.98"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "FAIL: 32 images, cosine to dygraph mean 0.9" in proc.stdout, \
        proc.stdout + proc.stderr[-2000:]


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
    with open(PTQ_TXT) as f:
        lines = f.read().splitlines()
    lines[38] = "infer_quant:Fasle"  # PaddleClas's own PTQ txt has this typo, which its runner ignores
    txt.write_text("\n".join(lines) + "\n")
    proc = run("test_train_inference_python.sh", txt, dict(os.environ, TIPC_OUTPUT=str(tmp_path)))
    assert proc.returncode == 2 and "line 39: infer_quant must be True (the inference model is int8) or False, " \
        "got 'Fasle'" in proc.stderr
    lines[33] = "ptq:" + lines[33].split(":", 1)[1]  # the quantize command under another key: not run
    txt.write_text("\n".join(lines) + "\n")
    proc = run("test_train_inference_python.sh", txt, dict(os.environ, TIPC_OUTPUT=str(tmp_path)))
    assert proc.returncode == 2 and "line 34: expected key 'kl_quant', got 'ptq:tools/quantize.py" in proc.stderr


def test_compare_features_takes_one_tolerance(tmp_path):
    for args, message in ((["--atol", "1e-4", "--min_mean_cosine", "0.98"], "exclude each other"),
                          (["--min_cosine", "0.95"], "--min_cosine needs --min_mean_cosine")):
        proc = subprocess.run([sys.executable, "test_tipc/compare_features.py", "-c", "configs/quickstart.yaml",
                               "--task", "person", "--features", str(tmp_path / "x.npz"), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-1000:]
