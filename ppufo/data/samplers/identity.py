"""Per-task samplers: infinite iterators of this rank's local dataset indices per step."""
import numpy as np

from ...utils.config import Field, check_args
from ...utils.errors import ConfigError
from .registry import SAMPLERS

POSITIVE, NONNEG = Field(int, min=1), Field(int, min=0)
COMMON = {"batch_size": POSITIVE, "seed": NONNEG, "rank": NONNEG, "world_size": POSITIVE}


def _check_rank(rank, world_size, where):
    if rank >= world_size:
        raise ConfigError(f"{where}: rank={rank} must be < world_size={world_size}")
    return rank, world_size  # each already checked against COMMON


def _nearest_multiple(value, step):
    """The multiple of step nearest to value (both neighbours on a tie), as text."""
    lo = max(step, value // step * step)
    hi = lo + step if lo < value else lo
    if value - lo == hi - value and lo != hi:
        return f"{lo} or {hi}"
    return str(lo if value - lo < hi - value else hi)


class _IndexSampler:
    """Infinite iterator; ``skip(n)`` advances n steps without building their indices."""

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    def skip(self, n):
        for _ in range(int(n)):
            self.next_batch(build=False)


@SAMPLERS.register
@check_args(**COMMON)
class RandomSampler(_IndexSampler):
    """Stream of seeded permutations of all indices, cut into global batches of
    ``batch_size``; rank r keeps the r-th contiguous slice. Epoch e's permutation comes from
    SeedSequence([seed, e]), so skipping is arithmetic."""

    def __init__(self, labels, batch_size, seed=0, rank=0, world_size=1):
        where = "RandomSampler"
        self.num_samples = len(labels)
        if self.num_samples == 0:
            raise ConfigError(f"{where}: the dataset is empty")
        self.batch_size = batch_size
        self.rank, self.world_size = _check_rank(rank, world_size, where)
        if self.batch_size % self.world_size:
            raise ConfigError(
                f"{where}: batch_size={batch_size} (global) is not divisible by world size "
                f"{self.world_size}; use {_nearest_multiple(self.batch_size, self.world_size)}")
        self.seed = seed
        self.local_batch_size = self.batch_size // self.world_size
        self._pos = 0  # position in the global stream
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch):
        if epoch != self._epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            self._epoch, self._perm = epoch, rng.permutation(self.num_samples).astype(np.int64)
        return self._perm

    def next_batch(self, build=True):
        start = self._pos + self.rank * self.local_batch_size
        self._pos += self.batch_size
        if not build:
            return None
        pos = np.arange(start, start + self.local_batch_size, dtype=np.int64)
        out = np.empty(self.local_batch_size, dtype=np.int64)
        for e in np.unique(pos // self.num_samples):  # a slice spans at most a few epochs
            m = pos // self.num_samples == e
            out[m] = self._permutation(int(e))[pos[m] % self.num_samples]
        return out

    def skip(self, n):
        self._pos += int(n) * self.batch_size


@SAMPLERS.register
@check_args(**COMMON, num_instances=POSITIVE)
class PKSampler(_IndexSampler):
    """P identities x K images per global batch (fast-reid NaiveIdentitySampler semantics).

    Each step draws P = batch_size / K identities without replacement from those still
    available in the current pass and takes each one's next K unused indices from a list
    shuffled at the start of the pass (identities with fewer than K images: K draws with
    replacement). An identity is retired once fewer than K unused indices remain; when fewer
    than P identities remain a new pass reshuffles everything. Rank r keeps the r-th
    contiguous chunk of P / world_size identities, so triplets are mined within a rank.
    """

    def __init__(self, labels, batch_size, num_instances=4, seed=0, rank=0, world_size=1):
        where = "PKSampler"
        self.batch_size = batch_size
        self.num_instances = k = num_instances
        self.rank, self.world_size = _check_rank(rank, world_size, where)
        step = k * self.world_size
        if self.batch_size % step:
            raise ConfigError(
                f"{where}: batch_size={batch_size} (global) must be a multiple of num_instances "
                f"(K={k}) x world size ({self.world_size}) = {step}; nearest valid: "
                f"{_nearest_multiple(self.batch_size, step)}")
        self.seed = seed
        self.num_pids = self.batch_size // k
        self.local_pids = self.num_pids // self.world_size
        self.local_batch_size = self.local_pids * k

        labels = np.asarray(labels).reshape(-1)
        self.pids, codes = np.unique(labels, return_inverse=True)
        n_ids = len(self.pids)
        if n_ids < self.num_pids:
            raise ConfigError(
                f"{where}: batch_size={batch_size} with K={k} needs P={self.num_pids} distinct "
                f"identities per step but the dataset has only {n_ids}; "
                + (f"lower batch_size to <= {n_ids * k // step * step}" if n_ids * k >= step
                   else "it cannot fill one identity per rank"))
        # indices grouped by identity (CSR), and the per-pass slot layout (>= K slots per id)
        self._order = np.argsort(codes, kind="stable").astype(np.int64)
        self._codes_sorted = codes[self._order]
        self._count = np.bincount(codes, minlength=n_ids).astype(np.int64)
        self._cstart = np.concatenate([[0], np.cumsum(self._count)[:-1]]).astype(np.int64)
        self._len = np.maximum(self._count, k)
        self._sstart = np.concatenate([[0], np.cumsum(self._len)[:-1]]).astype(np.int64)
        self._small = np.flatnonzero(self._count < k)
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed]))
        self.passes = 0
        self._new_pass()

    def _new_pass(self):
        rng, k = self._rng, self.num_instances
        n = len(self._order)
        # shuffle within each identity: sort by (identity, random key)
        perm = np.lexsort((rng.random(n), self._codes_sorted))
        shuffled = self._order[perm]
        rank_in_id = np.arange(n) - self._cstart[self._codes_sorted]
        slots = np.empty(int(self._len.sum()), dtype=np.int64)
        slots[self._sstart[self._codes_sorted] + rank_in_id] = shuffled
        if len(self._small):  # upsample: K draws with replacement
            c = self._count[self._small]
            pick = (rng.random((len(self._small), k)) * c[:, None]).astype(np.int64)
            src = self._order[self._cstart[self._small][:, None] + pick]
            slots[self._sstart[self._small][:, None] + np.arange(k)] = src
        self._slots = slots
        self._ptr = np.zeros(len(self.pids), dtype=np.int64)
        self._avail = np.arange(len(self.pids), dtype=np.int64)
        self.passes += 1

    def next_batch(self, build=True):
        k = self.num_instances
        if len(self._avail) < self.num_pids:
            self._new_pass()
        ids = self._avail[self._rng.choice(len(self._avail), self.num_pids, replace=False)]
        out = None
        if build:
            mine = ids[self.rank * self.local_pids:(self.rank + 1) * self.local_pids]
            pos = (self._sstart[mine] + self._ptr[mine])[:, None] + np.arange(k)
            out = self._slots[pos].reshape(-1)
        self._ptr[ids] += k
        done = ids[self._len[ids] - self._ptr[ids] < k]
        if len(done):
            self._avail = self._avail[~np.isin(self._avail, done)]
        return out
