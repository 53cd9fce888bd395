"""One run of an ablation study, in its own process: python -m ppufo.ablation.worker <run_dir>/spec.json

A trained run writes the demo data of its seed if the config generates it (ensure_demo_data locks
the folder, so two runs of one seed starting together write it once), takes what it needs from
the runs it starts from (sources.at_start: a subnet's shape, max_iters for a compute budget;
init_from is already in its overrides), trains with no evaluation during training, and scores
the final iteration once on the compared sets its config holds (the spec's "sets": all of
compare.sets, or a part for a single-task arm). A derived run loads the same seed's final
checkpoint of its source arm and trains nothing: precise_bn recomputes the backbone's BN
statistics on heterogeneous batches and scores that; search (search_arm.py) searches a subnet,
extracts and scores it.

Output in the run folder: train.log (derived: eval.log, search.log), config.yaml (the merged
config), eval_<tag>.json (the evaluator's full result), checkpoints (trained runs), and LAST,
written atomically (temporary file + rename), result.json::

    {"arm", "seed", "kind", "identity", "iteration", "steps", "images_per_task": {task: n},
     "scores": {set: {key: number}} (the spec's sets), "seconds": {"total", "demo_data", "train", "eval"},
     "config": "<run_dir>/config.yaml", "eval_json", "commit", "train_flops" (trained: the
     backbone's training FLOPs, every pass; engine/train_flops.py), "taken" (trained runs with
     sources: what at_start took), "post_step" (precise_bn: its summary), "subnet" (search),
     "source" (derived: the source run's folder)}

A run folder without result.json is an interrupted run. While a worker lives it holds an
exclusive lock on <run_dir>/.running (with its pid inside), which the study checks before it
deletes such a folder. Paddle is imported inside main(), after the start time is taken.
"""
import json
import os
import subprocess
import sys
import time

from .results import RESULT, numbers_of, open_derived_run, read_result, write_json_atomic  # noqa: F401  (imported from here too)
from .search_arm import search_run

_T0 = time.time()
SPEC, RUNNING = "spec.json", ".running"

try:
    import fcntl
except ImportError:  # Windows: no lock; the study cannot see a live worker there
    fcntl = None


def hold_running_lock(run_dir):
    """Lock <run_dir>/.running for this process's lifetime (the kernel lets go when it dies)."""
    fh = open(os.path.join(run_dir, RUNNING), "a+")
    if fcntl:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh  # keep a reference: closing it releases the lock


def running_pid(run_dir):
    """The pid of a live worker holding <run_dir>/.running, else None."""
    path = os.path.join(run_dir, RUNNING)
    if not fcntl or not os.path.isfile(path):
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "?"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def git_commit():
    """`git rev-parse --short HEAD` of the repository holding this ppufo, with "-dirty" when
    tracked files differ from it; "unknown" outside a git checkout."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def images_per_task(batch_sampler, start, stop):
    """{task: images} the batch sampler draws over steps start..stop-1 (one process)."""
    seen = dict.fromkeys(batch_sampler.tasks, 0)
    for it in range(start, stop):
        for t in batch_sampler.tasks_at(it):
            seen[t] += batch_sampler.task_counts[t]
    return seen


def train_run(spec):
    from ..demo import ensure_demo_data
    from ..engine import build_trainer
    from ..engine.evaluator import Evaluator
    from ..engine.hooks import EvalHook
    from ..utils.config import load_config
    from .sources import at_start

    extra, taken = at_start(spec)
    config = load_config(spec["base"], spec["overrides"] + extra)
    t = time.time()
    ensure_demo_data(config)
    t_data = time.time() - t
    t = time.time()
    trainer = build_trainer(config)
    # scored once, at the end, on the compared sets; no best_model (it would be chosen on them)
    trainer.hooks = [h for h in trainer.hooks if not isinstance(h, EvalHook)]
    trainer.evaluator = Evaluator(config, trainer.model, only=spec["sets"])
    try:
        last = trainer.train()
        t_train = time.time() - t
        t = time.time()
        summary = trainer.evaluate(last)
        t_eval = time.time() - t
    finally:
        trainer.close()
    bs = trainer.loader.batch_sampler
    return {"iteration": last, "steps": last - trainer.start_iter,
            "images_per_task": {k: v * trainer.world_size for k, v in
                                images_per_task(bs, trainer.start_iter, last).items()},
            "scores": numbers_of(summary, spec["sets"]), "train_flops": trainer.train_flops,
            **({"taken": taken} if taken else {}),
            "seconds": {"demo_data": t_data, "train": t_train, "eval": t_eval},
            "config": os.path.join(spec["run_dir"], "config.yaml"),
            "eval_json": os.path.join(spec["run_dir"], f"eval_{summary['tag']}.json")}


def precise_bn_run(spec):
    from ..arch.trained import load_trained_model
    from ..engine.amp import MixedPrecision
    from ..engine.eval_report import report_results
    from ..engine.evaluator import Evaluator
    from ..engine.precise_bn import recompute_backbone_bn  # noqa: lazy: the derived path only

    src_dir, run_dir = spec["source_dir"], spec["run_dir"]
    source, config, log = open_derived_run(spec, "eval.log")
    t = time.time()
    model = load_trained_model(config)
    n = spec["precise_bn"]["num_batches"]
    post = recompute_backbone_bn(model, config, n, seed=spec["seed"], log=log)
    log.info(f"precise BN on {n} heterogeneous batches (seed {spec['seed']}): {post}")
    model.eval()
    t_post = time.time() - t
    t = time.time()
    amp = MixedPrecision(config["Global"]["amp"], config["Global"]["device"], log)
    with amp.eval_autocast():
        summary = Evaluator(config, model, only=spec["sets"]).evaluate(tag="precise_bn")
    eval_json = report_results(summary, run_dir, log)
    t_eval = time.time() - t
    return {"iteration": source["iteration"], "steps": source["steps"],
            "images_per_task": source["images_per_task"], "scores": numbers_of(summary, spec["sets"]),
            "seconds": {"demo_data": 0.0, "train": 0.0, "post_step": t_post, "eval": t_eval},
            "config": os.path.join(run_dir, "config.yaml"),
            "eval_json": eval_json,
            "post_step": post, "source": src_dir}


KINDS = {"train": train_run, "precise_bn": precise_bn_run, "search": search_run}


def run(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    lock = hold_running_lock(spec["run_dir"])
    try:
        result = KINDS[spec["kind"]](spec)
        result.update(arm=spec["arm"], seed=spec["seed"], kind=spec["kind"], identity=spec["identity"],
                      commit=git_commit())
        result["seconds"]["total"] = time.time() - _T0
        write_json_atomic(os.path.join(spec["run_dir"], RESULT), result)
    finally:
        lock.close()
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: python -m ppufo.ablation.worker <run_dir>/spec.json (started by ppufo-ablate)")
    from ..engine.interrupt import TrainingInterrupted
    from ..utils.errors import ConfigError, DataError
    try:
        run(argv[0])
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    except TrainingInterrupted as e:  # the study stopped it (SIGTERM): no traceback in worker.log
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.code)


if __name__ == "__main__":
    main()
