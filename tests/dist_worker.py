"""Run via paddle.distributed.launch on 2 ranks. By test_launch: a few quickstart steps, then an
evaluation sharded over the ranks. With first argument ``grads``, by test_dist_grads: one
training step two ways from the same weights and batch, saving each rank's averaged gradients
and updated weights (supernet: DataParallel's all-reduce after every sandwich pass, as before,
vs local accumulation and one fused all-reduce; All-in-One: recompute off vs on, which selects
no_sync and one fused all-reduce)."""
import json
import os
import sys

import numpy as np
import paddle

from helpers import tiny_config, tiny_supernet_config  # importable: run as a script, its own folder comes first
from ppufo.data.loader import build_batch_sampler
from ppufo.engine import build_trainer, trainer as trainer_module
from ppufo.engine.trainer import Trainer


def main(demo_root, out):
    trainer = Trainer(tiny_config(demo_root, out, ["Global.max_iters=3"]))
    rank = trainer.rank
    if rank == 0:
        paddle.save(trainer.model.state_dict(), os.path.join(out, "init.pdparams"))
    samples = []
    for it, batch in enumerate(trainer.loader, start=1):
        trainer.train_step(batch, it)
    trainer.save(3)
    # the exact global sample indices this rank drew each step
    for step in build_batch_sampler(trainer.cfg, trainer.task_sets, rank, trainer.world_size):
        samples.append([i for i, _ in step])
    paddle.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pdparams"))
    np.save(os.path.join(out, f"rank{rank}_samples.npy"), np.asarray(samples))
    embedded, embed = [0], trainer.model.embed  # images this rank embeds during evaluation
    trainer.model.embed = lambda x, *a, **k: (embedded.__setitem__(0, embedded[0] + x.shape[0]), embed(x, *a, **k))[1]
    result = trainer.evaluate(3)
    with open(os.path.join(out, f"rank{rank}_eval.json"), "w") as f:
        json.dump({"scores": [r["score"] for r in result["sets"]], "embedded": embedded[0]}, f)


# SGD at full LR from the first step, so the step moves the weights by the gradients themselves
SGD = ["Optimizer.name=SGD", "Optimizer.momentum=0.9", "Optimizer.lr.warmup_ratio=0.0",
       "Optimizer.lr.learning_rate=0.1"]


def one_step(trainer, batch, init):
    """(gradients as the optimizer sees them, weights after the step) of iteration 1."""
    trainer.model.set_state_dict({k: paddle.to_tensor(v) for k, v in init.items()})
    trainer.optimizer, trainer.lr = trainer.build_optimizer()
    grads, apply = {}, trainer.apply_step

    def capture():
        grads.update({n: p.grad.numpy().copy() for n, p in trainer.model.named_parameters()
                      if p.grad is not None})
        apply()
    trainer.apply_step = capture
    trainer.train_step(batch, 1)
    del trainer.apply_step
    return grads, {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}


def save(out, name, rank, grads, weights):
    np.savez(os.path.join(out, f"{name}_rank{rank}.npz"),
             **{"grad:" + k: v for k, v in grads.items()}, **{"weight:" + k: v for k, v in weights.items()})


def grads_main(demo_root, out):
    """For test_dist_grads: one step two ways from the same weights and batch (see there)."""
    sup = build_trainer(tiny_supernet_config(demo_root, out, "Supernet.distill_weight=0.5", *SGD))
    trainer_module.pdist.init_parallel_env = lambda: None  # one process group for all trainers
    rank, batch = sup.rank, next(iter(sup.loader))
    init = {k: v.numpy().copy() for k, v in sup.model.state_dict().items()}
    for once in (False, True):
        sup.sync_once = once
        save(out, f"supernet_{'once' if once else 'per_pass'}", rank, *one_step(sup, batch, init))

    for recompute in (False, True):
        t = build_trainer(tiny_config(demo_root, out, [f"Arch.Backbone.recompute={recompute}",
                                                       "Arch.Backbone.drop_path_rate=0.1", *SGD]))
        assert t.sync_once == recompute and t.net.find_unused_parameters is False
        if not recompute:
            batch = next(iter(t.loader))
            init = {k: v.numpy().copy() for k, v in t.model.state_dict().items()}
        save(out, f"allinone_recompute{int(recompute)}", rank, *one_step(t, batch, init))
    assert sup.net.find_unused_parameters is True


if __name__ == "__main__":
    grads_main(*sys.argv[2:4]) if sys.argv[1] == "grads" else main(sys.argv[1], sys.argv[2])
