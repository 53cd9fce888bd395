"""Ctrl-C in the middle of tools/train.py keeps the run: the step in progress finishes, latest is
saved, the printed command resumes it, and the resumed run ends with the very weights of a run
never interrupted (byte for byte). Under paddle.distributed.launch every rank stops at the same
step and rank 0 saves, with no rank left waiting in a collective."""
import hashlib
import os
import shlex
import signal
import subprocess
import sys
import time

from helpers import ROOT, tiny_config
from ppufo.utils.checkpoint import read_states, resolve_prefix
from ppufo.utils.config import dump_config

STEPS = 60


def tiny_file(demo_root, tmp_path):
    """The tests' tiny config as a file, with one loader worker and no test sets (no final eval)."""
    cfg = tiny_config(demo_root, tmp_path / "unused", ["DataLoader.Train.num_workers=1"] +
                      [f"Tasks.{t}.test_sets=[]" for t in ("face", "person", "vehicle", "product")])
    path = str(tmp_path / "tiny.yaml")
    dump_config(cfg, path)
    return path


def train_cmd(config, out, *extra):
    return [sys.executable, "tools/train.py", "-c", config, "-o", f"Global.output_dir={out}",
            f"Global.max_iters={STEPS}", *extra]


def digest(prefix):
    prefix = resolve_prefix(prefix)[0]  # latest: the iter_<n> it names
    return {ext: hashlib.sha256(open(prefix + ext, "rb").read()).hexdigest() for ext in (".pdparams", ".pdopt")}


def start_and_interrupt(cmd, log, tmp_path, marker, send):
    """Start ``cmd`` in its own session, wait for ``marker`` in ``log`` (its stdout, or a file it
    writes), ``send`` the interrupt, return the finished process and its stderr."""
    out, err = open(tmp_path / "stdout", "w"), open(tmp_path / "stderr", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(log) and marker in open(log).read():
            break
        time.sleep(0.05)
    assert proc.poll() is None, open(tmp_path / "stderr").read()[-3000:]
    send(proc)
    proc.wait(300)
    out.close()
    err.close()
    return proc, open(tmp_path / "stderr").read()


def test_ctrl_c_saves_and_the_printed_command_resumes_to_the_uninterrupted_weights(demo_root, tmp_path):
    config = tiny_file(demo_root, tmp_path)
    full = tmp_path / "full"
    done = subprocess.run(train_cmd(config, full), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    cut = tmp_path / "cut"
    # Ctrl-C in a terminal: SIGINT to the whole process group (the trainer and its loader worker)
    proc, err = start_and_interrupt(train_cmd(config, cut), tmp_path / "stdout", tmp_path, "[Train][Iter: 3/",
                                    lambda p: os.killpg(p.pid, signal.SIGINT))
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    stopped = read_states(str(cut / "latest"))["iteration"]
    assert 3 <= stopped < STEPS
    assert f"training stopped by SIGINT after iteration {stopped}; checkpoint {cut / 'latest'} saved" in err
    resume = [line for line in err.splitlines() if line.startswith("resume with: ")]
    assert len(resume) == 1, err[-3000:]
    cmd = shlex.split(resume[0][len("resume with: "):])
    assert cmd[:3] == ["python", "tools/train.py", "-c"] and cmd[-2:] == ["-o", f"Global.checkpoints={cut / 'latest'}"]
    again = subprocess.run([sys.executable] + cmd[1:], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from {cut / 'latest'} at iteration {stopped}" in again.stdout
    assert read_states(str(cut / "latest"))["iteration"] == STEPS
    assert digest(str(cut / "latest")) == digest(str(full / "latest"))


def test_an_interrupted_launch_stops_every_rank_and_rank_0_saves(demo_root, tmp_path):
    """paddle.distributed.launch on SIGINT sends SIGTERM to each rank (three times, 0.2 s apart),
    then waits up to 30 s. Both ranks stop after the same step (none waits in an all-reduce),
    rank 0 saves, the launch exits well within its grace period, and the run resumes to its end."""
    config = tiny_file(demo_root, tmp_path)
    out, logs = tmp_path / "dist", tmp_path / "log"

    def launch(*extra):
        return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                str(logs)] + train_cmd(config, out, *extra)[1:]
    t0 = [0.0]

    def interrupt(p):
        t0[0] = time.time()
        os.kill(p.pid, signal.SIGINT)  # to the launcher only; it signals the ranks
    proc, err = start_and_interrupt(launch(), logs / "workerlog.0", tmp_path, "[Train][Iter: 3/", interrupt)
    assert time.time() - t0[0] < 25, "the ranks did not stop on their own (the launcher killed them)"
    rank0, rank1 = (open(logs / f"workerlog.{r}").read() for r in (0, 1))
    stopped = read_states(str(out / "latest"))["iteration"]
    assert 3 <= stopped < STEPS, rank0[-3000:]
    assert f"stopped by SIGTERM after iteration {stopped}; saved {out / 'latest'}" in rank0
    assert "Traceback" not in rank0 + rank1 and "TIMEOUT" not in rank1, (rank0 + rank1)[-3000:]
    again = subprocess.run(launch("-o", f"Global.checkpoints={out / 'latest'}"), cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, open(logs / "workerlog.0").read()[-3000:]
    assert read_states(str(out / "latest"))["iteration"] == STEPS
