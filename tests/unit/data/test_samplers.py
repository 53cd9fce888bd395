import numpy as np
import paddle
import pytest

from ppufo.data.samplers import (SAMPLERS, HeterogeneousBatchSampler, HomogeneousBatchSampler,
                                 PKSampler, RandomSampler)
from ppufo.utils.errors import ConfigError

# 12 identities with 1..12 images each, labels shuffled over the index space
COUNTS = np.arange(1, 13)
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(100, 112), COUNTS))


def take(sampler, n):
    return [next(sampler) for _ in range(n)]


def test_pk_batches_are_p_distinct_ids_times_k():
    s = PKSampler(LABELS, batch_size=16, num_instances=4, seed=3)
    assert (s.num_pids, s.local_batch_size) == (4, 16)
    for b in take(s, 60):
        assert b.dtype == np.int64 and b.shape == (16,)
        groups = LABELS[b].reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # contiguous groups of K share an id
        assert len(set(groups[:, 0])) == 4  # P distinct ids
    assert s.passes > 1


def test_pk_deterministic_by_seed_and_independent_of_global_rng():
    np.random.seed(1)
    a = take(PKSampler(LABELS, 16, 4, seed=7), 30)
    np.random.seed(2)
    b = take(PKSampler(LABELS, 16, 4, seed=7), 30)
    c = take(PKSampler(LABELS, 16, 4, seed=8), 30)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_pk_ranks_disjoint_and_union_is_global_batch():
    glob = take(PKSampler(LABELS, 16, 4, seed=5), 40)
    ranks = [PKSampler(LABELS, 16, 4, seed=5, rank=r, world_size=2) for r in range(2)]
    for g in glob:
        r0, r1 = next(ranks[0]), next(ranks[1])
        assert r0.shape == (8,) and r1.shape == (8,)
        assert np.array_equal(np.concatenate([r0, r1]), g)
        assert not set(LABELS[r0]) & set(LABELS[r1])  # whole identities per rank


def test_pk_pass_covers_every_identity_and_upsamples_small_ones():
    # every id has <= K images -> each is drawn exactly once per pass (12 ids / P=4 = 3 steps)
    labels = np.repeat(np.arange(12), [1, 2, 3, 4] * 3)
    s = PKSampler(labels, 16, 4, seed=0)
    for _ in range(3):  # three passes
        batches = take(s, 3)
        ids = np.concatenate([labels[b][::4] for b in batches])
        assert sorted(ids) == list(range(12))
        for b in batches:
            for grp in b.reshape(4, 4):
                own = np.flatnonzero(labels == labels[grp[0]])
                assert set(grp) <= set(own)  # upsampled with replacement from its own images
                if len(own) == 1:
                    assert (grp == own[0]).all()
                if len(own) == 4:
                    assert sorted(grp) == sorted(own)
    # ids with >= K images: no index repeats within a pass, at most count // K groups per id
    labels = np.repeat(np.arange(6), [4, 5, 8, 9, 12, 13])
    s = PKSampler(labels, 8, 4, seed=1)
    passes, current = [], []
    while s.passes < 6:
        p = s.passes
        b = next(s)
        if s.passes != p:  # this draw started a new pass
            passes.append(np.concatenate(current))
            current = []
        current.append(b)
    assert len(passes) == 5
    for used in passes:
        assert len(set(used)) == len(used)
        groups = np.bincount(labels[used], minlength=6) // 4
        assert (groups <= np.array([4, 5, 8, 9, 12, 13]) // 4).all()
        assert groups.sum() >= 9  # ends only when < P=2 ids remain (<= 3 groups left)


def test_pk_errors_name_values():
    with pytest.raises(ConfigError, match=r"batch_size=18 \(global\) must be a multiple of num_instances "
                                          r"\(K=4\) x world size \(2\) = 8; nearest valid: 16"):
        PKSampler(LABELS, 18, 4, world_size=2)
    with pytest.raises(ConfigError, match=r"nearest valid: 24"):
        PKSampler(LABELS, 21, 4, world_size=2)
    with pytest.raises(ConfigError, match=r"needs P=16 distinct identities per step but the dataset has "
                                          r"only 12; lower batch_size to <= 48"):
        PKSampler(LABELS, 64, 4)
    with pytest.raises(ConfigError, match=r"rank=2 must be < world_size=2"):
        PKSampler(LABELS, 16, 4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match=r"^PKSampler\.num_instances: 0 is out of range; allowed: >= 1$"):
        PKSampler(LABELS, 16, 0)
    with pytest.raises(ConfigError, match=r"^PKSampler\.batch_size: expected int, got bool True$"):
        PKSampler(LABELS, True, 4)
    with pytest.raises(ConfigError, match=r"^RandomSampler\.seed: -1 is out of range; allowed: >= 0$"):
        RandomSampler(LABELS, 4, seed=-1)
    assert PKSampler(LABELS, np.int64(16), np.int32(4)).num_pids == 4  # numpy ints count as ints


def test_random_sampler_permutations_and_rank_slices():
    labels = np.zeros(12, dtype=np.int64)
    single = RandomSampler(labels, 6, seed=4)
    glob = take(single, 6)  # three epochs
    for e in range(3):
        assert sorted(np.concatenate(glob[2 * e:2 * e + 2])) == list(range(12))
    assert not np.array_equal(np.concatenate(glob[:2]), np.concatenate(glob[2:4]))
    ranks = [RandomSampler(labels, 6, seed=4, rank=r, world_size=3) for r in range(3)]
    for g in glob:
        parts = [next(s) for s in ranks]
        assert all(p.shape == (2,) for p in parts)
        assert np.array_equal(np.concatenate(parts), g)
    # batches that straddle epochs; skip == drawing
    a, b = RandomSampler(labels, 5, seed=1), RandomSampler(labels, 5, seed=1)
    drawn = take(a, 7)
    b.skip(4)
    assert np.array_equal(next(b), drawn[4])
    assert sorted(np.concatenate(drawn)[:12]) == list(range(12))
    with pytest.raises(ConfigError, match=r"batch_size=7 \(global\) is not divisible by world size 2; use 6 or 8"):
        RandomSampler(labels, 7, world_size=2)
    with pytest.raises(ConfigError, match=r"world size 4; use 12"):
        RandomSampler(labels, 13, world_size=4)


def make_multi(cls, start_iter=0, max_iters=12, seed=9, rank=0, world_size=1):
    samplers = {
        "face": SAMPLERS.build({"name": "RandomSampler"}, labels=np.zeros(50, np.int64), batch_size=6,
                               seed=1, rank=rank, world_size=world_size),
        "person": SAMPLERS.build({"name": "PKSampler", "num_instances": 2}, labels=LABELS, batch_size=8,
                                 seed=1, rank=rank, world_size=world_size),
    }
    return SAMPLERS.build({"name": cls}, task_samplers=samplers, offsets={"face": 0, "person": 50},
                          max_iters=max_iters, start_iter=start_iter, seed=seed, rank=rank)


def test_heterogeneous_every_step_holds_every_task_in_order():
    s = make_multi("HeterogeneousBatchSampler")
    assert isinstance(s, HeterogeneousBatchSampler)
    assert s.task_counts == {"face": 6, "person": 8} and len(s) == 12
    batches = list(s)
    assert len(batches) == 12
    ref_face = RandomSampler(np.zeros(50, np.int64), 6, seed=1)
    ref_person = PKSampler(LABELS, 8, 2, seed=1)
    for b in batches:
        idx = np.array([i for i, _ in b])
        seeds = [sd for _, sd in b]
        assert len(b) == 14 and all(isinstance(i, int) and isinstance(sd, int) for i, sd in b)
        assert np.array_equal(idx[:6], next(ref_face))  # face first, offset 0
        assert np.array_equal(idx[6:], next(ref_person) + 50)  # then person, offset 50
        assert len(set(seeds)) == 14
    assert list(s) == []  # exhausted: iteration state is kept
    # aug seeds: reproducible, different per iteration and per rank
    again = list(make_multi("HeterogeneousBatchSampler"))
    assert again == batches
    assert [sd for _, sd in batches[0]] != [sd for _, sd in batches[1]]
    other_seed = list(make_multi("HeterogeneousBatchSampler", seed=10))
    assert [i for i, _ in other_seed[0]] == [i for i, _ in batches[0]]
    assert [sd for _, sd in other_seed[0]] != [sd for _, sd in batches[0]]


def test_heterogeneous_ranks_split_the_global_batch():
    full = list(make_multi("HeterogeneousBatchSampler", max_iters=5))
    parts = [list(make_multi("HeterogeneousBatchSampler", max_iters=5, rank=r, world_size=2))
             for r in range(2)]
    assert parts[0][0].__len__() == 7
    for it in range(5):
        r0, r1 = ([i for i, _ in p[it]] for p in parts)
        g = [i for i, _ in full[it]]
        assert r0[:3] + r1[:3] == g[:6] and r0[3:] + r1[3:] == g[6:]
        assert [sd for _, sd in parts[0][it]] != [sd for _, sd in parts[1][it]][:7]


@pytest.mark.parametrize("cls", ["HeterogeneousBatchSampler", "HomogeneousBatchSampler"])
@pytest.mark.parametrize("rank", [0, 1])
def test_resume_yields_the_tail_of_a_full_run(cls, rank):
    full = list(make_multi(cls, rank=rank, world_size=2, max_iters=40))
    for start in (1, 5, 23):
        resumed = make_multi(cls, start_iter=start, rank=rank, world_size=2, max_iters=40)
        assert len(resumed) == 40 - start
        assert list(resumed) == full[start:]


def test_homogeneous_round_robin():
    s = make_multi("HomogeneousBatchSampler", max_iters=6)
    assert isinstance(s, HomogeneousBatchSampler) and s.task_counts == {"face": 6, "person": 8}
    ref_face = RandomSampler(np.zeros(50, np.int64), 6, seed=1)
    ref_person = PKSampler(LABELS, 8, 2, seed=1)
    for it, b in enumerate(s):
        idx = np.array([i for i, _ in b])
        if it % 2 == 0:
            assert np.array_equal(idx, next(ref_face))
        else:
            assert np.array_equal(idx, next(ref_person) + 50)


def test_works_as_paddle_batch_sampler_and_validates():
    class Echo(paddle.io.Dataset):
        def __len__(self):
            return 1000

        def __getitem__(self, index):
            i, seed = index
            return np.int64(i), np.int64(seed)

    s = make_multi("HeterogeneousBatchSampler", max_iters=3)
    expected = list(make_multi("HeterogeneousBatchSampler", max_iters=3))
    loader = paddle.io.DataLoader(Echo(), batch_sampler=s, num_workers=0)
    got = [(i.numpy().tolist(), sd.numpy().tolist()) for i, sd in loader]
    assert got == [([i for i, _ in b], [sd for _, sd in b]) for b in expected]
    samplers = {"face": RandomSampler(np.zeros(5), 2)}
    with pytest.raises(ConfigError, match=r"offsets has no entry for task\(s\) \['face'\]"):
        HeterogeneousBatchSampler(samplers, {}, 3)
    with pytest.raises(ConfigError, match=r"start_iter=4 is past max_iters=3"):
        HeterogeneousBatchSampler(samplers, {"face": 0}, 3, start_iter=4)
    with pytest.raises(ConfigError, match=r"^HeterogeneousBatchSampler: seed: -1 is out of range; allowed: >= 0$"):
        HeterogeneousBatchSampler(samplers, {"face": 0}, 3, seed=-1)
    with pytest.raises(ConfigError, match=r"^HeterogeneousBatchSampler: max_iters: expected int, got"):
        HeterogeneousBatchSampler(samplers, {"face": 0}, 2.5)
