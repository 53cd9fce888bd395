"""Whole multi-process runs on CPU (gloo) through paddle.distributed.launch."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from helpers import ROOT, tiny_config
from ppufo.engine.trainer import Trainer
from ppufo.utils.checkpoint import read_states


@pytest.mark.slow
def test_two_process_cpu_launch_keeps_ranks_in_sync(full_demo_root, tmp_path):
    demo_root = str(full_demo_root)  # the 13 test sets: evaluation is sharded under every protocol
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "log"), os.path.join(ROOT, "tests", "dist_worker.py"),
           demo_root, str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    logs = "".join((tmp_path / "log" / f).read_text() for f in os.listdir(tmp_path / "log"))
    assert proc.returncode == 0, logs[-3000:]
    w0 = paddle.load(str(out / "rank0.pdparams"))
    w1 = paddle.load(str(out / "rank1.pdparams"))
    init = paddle.load(str(out / "init.pdparams"))
    assert set(w0) == set(w1)
    for k in w0:
        np.testing.assert_allclose(w0[k].numpy(), w1[k].numpy(), rtol=0, atol=1e-6, err_msg=k)
    assert any(not np.allclose(w0[k].numpy(), init[k].numpy()) for k in w0)  # training happened
    s0 = np.load(out / "rank0_samples.npy")
    s1 = np.load(out / "rank1_samples.npy")
    assert s0.shape == s1.shape and s0.shape[1] == 16  # 32 global images per step / 2 ranks
    for a, b in zip(s0, s1):
        assert not set(a) & set(b)  # disjoint samples per rank each step
    assert read_states(str(out / "latest"))["iteration"] == 3  # saved by rank 0
    # evaluation: each rank embedded half the images, and both hold the single-process scores
    from ppufo.engine.evaluator import Evaluator
    from ppufo.io.weights import load_weights
    e0, e1 = (json.loads((out / f"rank{r}_eval.json").read_text()) for r in (0, 1))
    trainer = Trainer(tiny_config(demo_root, tmp_path / "single", ["Global.max_iters=3"]))
    load_weights(trainer.model, str(out / "latest"))
    embedded, embed = [0], trainer.model.embed
    trainer.model.embed = lambda x, *a, **k: (embedded.__setitem__(0, embedded[0] + x.shape[0]), embed(x, *a, **k))[1]
    single = [r["score"] for r in Evaluator(trainer.cfg, trainer.model).evaluate("single")["sets"]]
    assert e0["scores"] == pytest.approx(single, abs=1e-5) and e1["scores"] == pytest.approx(single, abs=1e-5)
    assert e0["embedded"] + e1["embedded"] == embedded[0] and abs(e0["embedded"] - e1["embedded"]) <= 16
