"""The README's commands, run as written in a `git clone` into a new folder (never the working
folder: a committed link to one machine's /tmp once made the main job fail in every fresh clone
while every test here passed). Global.data_root stays at its default."""
import hashlib
import json
import os
import shlex
import subprocess
import sys

from helpers import git_clone, readme_command

MAIN = "python tools/train.py -c configs/quickstart.yaml"
LAUNCH = "python -m paddle.distributed.launch"


def run(cmd, clone, env, timeout=900):
    args = shlex.split(cmd)
    args[0] = sys.executable if args[0] == "python" else args[0]
    return subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def fingerprint(prefix):
    """(iteration, best, sha256 of the weights) of the checkpoint ``prefix`` (a pointer: the one it names)."""
    from ppufo.io.weights import weights_file
    from ppufo.utils.checkpoint import read_states
    states = read_states(prefix)
    with open(weights_file(prefix), "rb") as f:
        return states["iteration"], states["best"], hashlib.sha256(f.read()).hexdigest()


def test_readme_main_job_then_launch_in_a_fresh_clone_keep_the_main_jobs_model(tmp_path):
    from ppufo.demo import WRITERS, written_sets
    clone, env = git_clone(tmp_path / "clone")
    main = readme_command(MAIN)
    assert main == MAIN  # the README's main job, exactly
    # 1. the main job, shortened to a handful of iterations; it still evaluates all 13 test sets
    proc = run(main + " -o Global.max_iters=8 Global.log_interval=4", clone, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = os.path.join(clone, "output", "quickstart")
    assert set(written_sets(os.path.join(clone, "data", "demo"))) == set(WRITERS)  # the default data_root
    with open(os.path.join(out, "eval_iter_8.json")) as f:
        result = json.load(f)
    assert len(result["sets"]) == 13 and all(r["score"] is not None for r in result["sets"])
    row = " | ".join(result["paper_row"].values())
    last = proc.stdout.strip().splitlines()[-1]
    assert [c.strip() for c in last.strip("| ").split(" | ")] == row.split(" | ")  # the run ends on the paper row
    before = {name: fingerprint(os.path.join(out, name)) for name in ("latest", "best_model")}
    assert before["latest"][0] == 8
    # 2. the README's two-process launch, as written: its own output_dir
    launch = readme_command(LAUNCH)
    proc = run(launch, clone, env)
    logs = "".join(open(os.path.join(clone, "log", f)).read() for f in ("workerlog.0", "workerlog.1"))
    assert proc.returncode == 0, logs[-4000:]
    assert "on 2 process(es)" in logs and "[Train][Iter: 6/6]" in logs
    launched = launch.split("Global.output_dir=")[1].split()[0]
    assert os.path.normpath(launched) != os.path.normpath("output/quickstart")
    assert fingerprint(os.path.join(clone, launched, "latest"))[0] == 6
    # 3. the main job's model is intact; training into its folder again is refused, and changes nothing
    assert {name: fingerprint(os.path.join(out, name)) for name in before} == before
    proc = run(main, clone, env, timeout=300)
    assert proc.returncode != 0 and "already holds the checkpoints of another run" in proc.stderr, proc.stderr[-2000:]
    assert "Global.overwrite_output_dir=true" in proc.stderr
    assert {name: fingerprint(os.path.join(out, name)) for name in before} == before
