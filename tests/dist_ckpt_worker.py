"""Run via paddle.distributed.launch on 2 ranks, by tests/e2e/test_dist_checkpoint.py.

``barrier <demo_root> <out>``: both ranks save (Trainer.save, then a best_model through
EvalHook.after_eval) while rank 0's writes are slowed; every rank records when it enters and
leaves each, rank 0 when its writes start and end (rank<r>_events.json).

``missing <demo_root> <out>``: each rank works in its own folder <out>/node<r> (as on a node of
its own without shared storage) and resumes from the relative Global.checkpoints=out/latest,
which only node0 holds; every rank writes the ConfigError it stops with (rank<r>_error.txt).
"""
import json
import os
import sys
import time

from helpers import tiny_config  # importable: run as a script, its own folder comes first
from ppufo.engine import trainer as trainer_module
from ppufo.engine.hooks import EvalHook
from ppufo.engine.trainer import Trainer
from ppufo.utils.errors import ConfigError

WRITE_SECONDS = 2.0


def barrier_main(demo_root, out):
    events = []

    def mark(what):
        events.append((what, time.time()))

    real = trainer_module.save_checkpoint

    def slow_save(*args, **kwargs):  # rank 0 only: the others never write
        mark("write_start")
        time.sleep(WRITE_SECONDS)
        real(*args, **kwargs)
        mark("write_end")
    trainer_module.save_checkpoint = slow_save
    trainer = Trainer(tiny_config(demo_root, os.path.join(out, "run"), ["Global.max_iters=2"]))
    trainer.train_step(next(iter(trainer.loader)), 1)
    mark("save_enter")
    trainer.save(1)
    mark("save_exit")
    trainer.saved_weights = None  # as after a step: best_model is a full copy, written slowly
    hook = next(h for h in trainer.hooks if isinstance(h, EvalHook))
    mark("eval_enter")
    hook.after_eval(1, {"score": 0.5})
    mark("eval_exit")
    with open(os.path.join(out, f"rank{trainer.rank}_events.json"), "w") as f:
        json.dump(events, f)


def missing_main(demo_root, out):
    rank = int(os.environ["PADDLE_TRAINER_ID"])
    node = os.path.join(out, f"node{rank}")
    os.makedirs(node, exist_ok=True)
    os.chdir(node)
    try:
        Trainer(tiny_config(demo_root, "out", ["Global.max_iters=2", "Global.checkpoints=out/latest"]))
        error = "no error"
    except ConfigError as e:
        error = str(e)
    with open(os.path.join(out, f"rank{rank}_error.txt"), "w") as f:
        f.write(error)


if __name__ == "__main__":
    {"barrier": barrier_main, "missing": missing_main}[sys.argv[1]](sys.argv[2], sys.argv[3])
