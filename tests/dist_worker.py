"""Run by test_trainer via paddle.distributed.launch: a few quickstart steps on 2 ranks."""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from conftest import tiny_config  # noqa: E402
from ppufo.data.loader import build_batch_sampler  # noqa: E402
from ppufo.engine.trainer import Trainer  # noqa: E402


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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
