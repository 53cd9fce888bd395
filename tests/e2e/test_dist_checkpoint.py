"""Checkpoints under a 2-process CPU launch (gloo): every rank waits at a barrier while rank 0
writes, and a checkpoint one rank cannot read stops every rank with an error naming it."""
import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import ROOT, tiny_config
from ppufo.engine.trainer import Trainer


def launch(tmp_path, *args):
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "log"), os.path.join(ROOT, "tests", "dist_ckpt_worker.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    logs = "".join((tmp_path / "log" / f).read_text() for f in sorted(os.listdir(tmp_path / "log")))
    assert proc.returncode == 0, logs[-3000:]


@pytest.mark.slow
def test_every_rank_waits_at_a_barrier_while_rank_0_writes(demo_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    launch(tmp_path, "barrier", demo_root, str(out))
    ev = [json.loads((out / f"rank{r}_events.json").read_text()) for r in (0, 1)]
    starts, ends = ([t for what, t in ev[0] if what == w] for w in ("write_start", "write_end"))
    assert len(starts) == len(ends) == 2  # iter_1, then best_model (a full copy)
    assert not [what for what, _ in ev[1] if what.startswith("write")]  # rank 0 alone writes
    save_end, best_end = ends
    ev = [dict(e) for e in ev]
    # rank 1 came to each save while rank 0 was still writing, and left only after it finished
    assert ev[1]["save_enter"] < save_end <= ev[1]["save_exit"]
    assert ev[1]["eval_enter"] < best_end <= ev[1]["eval_exit"]
    run = out / "run"
    assert json.loads((run / "latest").read_text()) == {"checkpoint": "iter_1", "iteration": 1}
    assert (run / "best_model.pdparams").is_file() and (run / "iter_1.pdparams").is_file()


@pytest.mark.slow
def test_a_checkpoint_one_rank_cannot_read_stops_every_rank_naming_it(demo_root, tmp_path):
    out = tmp_path / "out"
    node0 = out / "node0"
    node0.mkdir(parents=True)
    first = Trainer(tiny_config(demo_root, node0 / "out", ["Global.max_iters=2"]))
    first.save(2)  # node0's own disk holds out/latest and iter_2; node1's holds nothing
    launch(tmp_path, "missing", demo_root, str(out))
    host = socket.gethostname()
    errors = [(out / f"rank{r}_error.txt").read_text() for r in (0, 1)]
    for e in errors:
        assert e.startswith(f"Global.checkpoints=out/latest: cannot be read by rank 1 on host {host}"), e
        assert ("storage every node mounts at the same path, or copy the checkpoint (the latest pointer and "
                "the iter_<n> files it names) to that path on every node") in e
    assert "(the log of each says why)" in errors[0]
    assert "; on this rank (1): Global.checkpoints: out/latest.pdstates not found" in errors[1]
