"""Run by test_trainer via paddle.distributed.launch: a few quickstart steps on 2 ranks, then
an evaluation sharded over them."""
import json
import os
import sys

import numpy as np
import paddle

from helpers import tiny_config  # importable: run as a script, its own folder comes first
from ppufo.data.loader import build_batch_sampler
from ppufo.engine.trainer import Trainer


def main(demo_root, out):
    trainer = Trainer(tiny_config(demo_root, out, ["Global.max_iters=3"]))
    rank = trainer.rank
    if rank == 0:
        paddle.save(trainer.model.state_dict(), os.path.join(out, "init.pdparams"))
    samples = []
    for it, batch in enumerate(trainer.loader, start=1):
        trainer.train_step(batch, it)
    trainer.save("latest", 3)
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
