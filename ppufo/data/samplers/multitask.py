"""Batch samplers over all tasks' datasets behind one index space (MultiTaskDataset).

Each yielded batch is a list of ``(global_index, aug_seed)``: global_index = offsets[task] +
the task sampler's local index; aug_seed drives that sample's augmentation and depends only
on (seed, iteration, rank, position in the batch), so a resumed run reproduces it.
"""
import numpy as np

from ...utils.config import Field
from ...utils.errors import ConfigError
from .registry import SAMPLERS


def aug_seeds(seed, iteration, rank, n):
    """n deterministic 32-bit seeds for positions 0..n-1 of (seed, iteration, rank)'s batch."""
    ss = np.random.SeedSequence([int(seed) % 2 ** 63, int(iteration), int(rank)])
    return ss.generate_state(n, dtype=np.uint32).astype(np.int64)


class _MultiTaskBatchSampler:
    def __init__(self, task_samplers, offsets, max_iters, start_iter=0, seed=0, rank=0):
        where = type(self).__name__
        if not isinstance(task_samplers, dict) or not task_samplers:
            raise ConfigError(f"{where}: task_samplers must be a non-empty {{task: sampler}} mapping")
        missing = [t for t in task_samplers if t not in offsets]
        if missing:
            raise ConfigError(f"{where}: offsets has no entry for task(s) {missing}; "
                              f"given: {sorted(offsets)}")
        count = Field(int, min=0)
        max_iters, start_iter, seed, rank = (count.check(v, f"{where}: {name}") for name, v in (
            ("max_iters", max_iters), ("start_iter", start_iter), ("seed", seed), ("rank", rank)))
        if start_iter > max_iters:
            raise ConfigError(f"{where}: start_iter={start_iter} is past max_iters={max_iters}")
        self.samplers = dict(task_samplers)
        self.tasks = list(self.samplers)
        self.offsets = {t: int(offsets[t]) for t in self.tasks}
        self.max_iters, self.start_iter = int(max_iters), int(start_iter)
        self.seed, self.rank = int(seed), int(rank)
        self.task_counts = {t: int(s.local_batch_size) for t, s in self.samplers.items()}
        self._it = self.start_iter
        for t, n in self._draws_before(self.start_iter).items():
            _skip(self.samplers[t], n)

    def __len__(self):
        return self.max_iters - self.start_iter

    def __iter__(self):
        # stateful: iterating again continues where the previous iteration stopped. Paddle's
        # DataLoader prefetches, so breaking out of a loader loop loses the prefetched steps.
        while self._it < self.max_iters:
            it = self._it
            self._it += 1
            yield self._batch(it, self.tasks_at(it))

    def _batch(self, it, tasks):
        parts = [self.offsets[t] + np.asarray(next(self.samplers[t]), dtype=np.int64) for t in tasks]
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        seeds = aug_seeds(self.seed, it, self.rank, len(idx))
        return [(int(i), int(s)) for i, s in zip(idx, seeds)]


def _skip(sampler, n):
    if n <= 0:
        return
    if hasattr(sampler, "skip"):
        sampler.skip(n)
    else:
        for _ in range(n):
            next(sampler)


@SAMPLERS.register
class HeterogeneousBatchSampler(_MultiTaskBatchSampler):
    """Every step holds every task's share, tasks contiguous in dict order (UFO's mixed batch)."""

    def tasks_at(self, it):
        """The tasks in step ``it`` (from 0), each with its task_counts images."""
        return self.tasks

    def _draws_before(self, it):
        return {t: it for t in self.tasks}


@SAMPLERS.register
class HomogeneousBatchSampler(_MultiTaskBatchSampler):
    """Ablation: step ``it`` holds only task ``tasks[it % T]`` at its own batch size."""

    def tasks_at(self, it):
        return [self.tasks[it % len(self.tasks)]]

    def _draws_before(self, it):
        n = len(self.tasks)
        return {t: (it - j + n - 1) // n for j, t in enumerate(self.tasks)}
