"""Metric tests: hand-computed cases, and equality with straightforward reference loops.

Random features are often "quantised" (small integers): every inner product is then exact in
float32 whatever the summation order, so numpy chunks of any size, gemv and faiss all see the
same scores, and the data is full of exact ties that exercise the tie rule (lower index first).
"""
import numpy as np
import pytest

from ppufo.metric import METRICS, PROTOCOLS, build_protocol
from ppufo.metric.recall import evaluate_recall_at_k
from ppufo.metric.reid import evaluate_reid
from ppufo.metric.rerank import average_query_expansion, k_reciprocal_rerank
from ppufo.metric.search import topk_search
from ppufo.metric.vehicleid import evaluate_vehicleid, gallery_draws
from ppufo.metric.verification import evaluate_verification, kfold_indices, pair_distances
from ppufo.utils.errors import ConfigError, DataError


# ----------------------------------------------------------------------------- references

def classic_reid(sim, q_pids, g_pids, q_cams, g_cams, max_rank=10):
    """fast-reid eval_market1501, one query at a time, on distance -sim with a stable argsort;
    junk (-1) dropped from the gallery and id-0 queries skipped as fast-reid's loaders do.
    CMC kept as float64 counts (fast-reid casts to float32)."""
    keep = g_pids != -1
    sim, g_pids, g_cams = sim[:, keep], g_pids[keep], g_cams[keep]
    hits, aps, inps, n_valid = np.zeros(max_rank), [], [], 0
    for i in range(len(sim)):
        if q_pids[i] == 0:
            continue
        order = np.argsort(-sim[i], kind="stable")
        remove = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i])
        raw = (g_pids[order] == q_pids[i])[~remove].astype(np.int32)
        if not raw.any():
            continue
        n_valid += 1
        cmc = raw.cumsum()
        last = np.max(np.where(raw == 1))
        inps.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        hits[:min(max_rank, len(cmc))] += cmc[:max_rank]
        if len(cmc) < max_rank:
            hits[len(cmc):] += 1
        aps.append((raw.cumsum() / np.arange(1, len(raw) + 1.0) * raw).sum() / raw.sum())
    return {"cmc": hits / n_valid, "mAP": np.mean(aps), "mINP": np.mean(inps), "valid": n_valid}


def assert_same_reid(got, ref, topk=(1, 5, 10)):
    assert got["num_valid_queries"] == ref["valid"]
    for k in topk:  # counts divided by the same integer: exactly equal
        assert got[f"rank{k}"] == ref["cmc"][k - 1], k
    # AP: same terms k / rank, summed in another order
    assert got["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert got["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)


def random_reid(seed, nq=40, ng=300, dim=6, quantised=True, n_ids=12):
    rng = np.random.default_rng(seed)
    if quantised:
        qf = rng.integers(-2, 3, (nq, dim)).astype(np.float32)
        gf = rng.integers(-2, 3, (ng, dim)).astype(np.float32)
    else:
        centers = rng.standard_normal((n_ids + 1, dim))
        qp0, gp0 = rng.integers(0, n_ids + 1, nq), rng.integers(0, n_ids + 1, ng)
        qf = (centers[qp0] + rng.standard_normal((nq, dim))).astype(np.float32)
        gf = (centers[gp0] + rng.standard_normal((ng, dim))).astype(np.float32)
    q_pids = rng.integers(0, n_ids, nq)         # includes id-0 queries (skipped)
    g_pids = rng.integers(-1, n_ids, ng)        # includes junk (-1) and distractors (0)
    return qf, gf, q_pids, g_pids, rng.integers(0, 3, nq), rng.integers(0, 3, ng)


# ----------------------------------------------------------------------------- ReID

def test_reid_hand_computed_filter_junk_distractor_ties_and_skipped_queries():
    # qf = [1, 0] and gf = [score, 0]: every similarity is exactly the first gallery column.
    #  g  pid cam score
    #  0   1   0  0.9   same id AND camera as q0 -> removed for q0
    #  1   2   1  0.8
    #  2   1   1  0.7
    #  3  -1   2  0.65  junk -> ignored
    #  4   0   1  0.6   distractor -> stays, never a match
    #  5   3   0  0.5   ties with g6: lower index first
    #  6   1   2  0.5
    #  7   1   2  0.4
    scores = np.array([0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.5, 0.4], np.float32)
    gf = np.stack([scores, np.zeros(8, np.float32)], 1)
    g_pids = np.array([1, 2, 1, -1, 0, 3, 1, 1])
    g_cams = np.array([0, 1, 1, 2, 1, 0, 2, 2])
    qf = np.tile(np.array([[1.0, 0.0]], np.float32), (4, 1))
    q_pids = np.array([1, 2, 0, 3])
    q_cams = np.array([0, 1, 1, 1])
    r = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, topk=(1, 2, 4, 5))
    # q0 kept ranking: g1 x, g2 HIT, g4 x, g5 x, g6 HIT, g7 HIT -> hits at ranks 2, 5, 6
    #    AP = (1/2 + 2/5 + 3/6) / 3 = 7/15; INP = 3/6 (g6 before g5 would give AP 1/2)
    # q1 (id 2, cam 1): its only id-2 item g1 is under its own camera -> no valid match
    # q2 (id 0): a distractor id never matches -> no valid match
    # q3 (id 3, cam 1): g5 is under camera 0 -> valid; kept ranking g0 g1 g2 g4 g5 -> rank 5
    #    AP = 1/5, INP = 1/5
    # valid = 2: mAP = (7/15 + 1/5) / 2 = 1/3, mINP = (1/2 + 1/5) / 2 = 0.35
    # first hits at 2 and 5: rank1 0, rank2 0.5, rank4 0.5, rank5 1
    assert r["num_queries"] == 4 and r["num_valid_queries"] == 2
    assert (r["rank1"], r["rank2"], r["rank4"], r["rank5"]) == (0.0, 0.5, 0.5, 1.0)
    assert r["mAP"] == pytest.approx(1 / 3, abs=1e-12)
    assert r["mINP"] == pytest.approx(0.35, abs=1e-12)
    # the same through a precomputed score matrix
    r2 = evaluate_reid(None, None, q_pids, g_pids, q_cams, g_cams, (1, 2, 4, 5), scores=qf @ gf.T)
    assert r2 == r


def test_reid_without_any_valid_query_raises_and_bad_inputs_are_named():
    f = np.eye(2, dtype=np.float32)
    with pytest.raises(DataError, match="none of the 2 queries has a valid match"):
        evaluate_reid(f, f, np.array([5, 6]), np.array([5, 6]), np.array([0, 1]), np.array([0, 1]))
    ids = np.array([1, 2])
    with pytest.raises(DataError, match="query features have dim 2 but gallery features have dim 3"):
        evaluate_reid(f, np.zeros((2, 3), np.float32), ids, ids, ids, ids)
    with pytest.raises(DataError, match="g_pids must be 1-D with 2 entries, got shape"):
        evaluate_reid(f, f, ids, np.array([1, 2, 3]), ids, ids)
    with pytest.raises(DataError, match="qf contains NaN"):
        evaluate_reid(np.array([[np.nan, 0]], np.float32), f, ids[:1], ids, ids[:1], ids)
    with pytest.raises(ConfigError, match=r"evaluate_reid: chunk_size: 0 is out of range; allowed: >= 1$"):
        evaluate_reid(f, f, ids, ids, ids, ids, chunk_size=0)
    with pytest.raises(ConfigError, match=r"^evaluate_vehicleid: repeats: 0 is out of range; allowed: >= 1$"):
        evaluate_vehicleid(f, ids, repeats=0)


@pytest.mark.parametrize("seed", range(6))
def test_reid_equals_per_query_loop_for_any_chunk_size(seed):
    qf, gf, qp, gp, qc, gc = random_reid(seed, quantised=True)
    ref = classic_reid(qf @ gf.T, qp, gp, qc, gc)
    for chunk in (1, 7, 64, 1000):
        assert_same_reid(evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=chunk), ref)


@pytest.mark.parametrize("seed", range(4))
def test_reid_equals_per_query_loop_on_float_features(seed):
    qf, gf, qp, gp, qc, gc = random_reid(seed, nq=60, ng=500, dim=16, quantised=False)
    ref = classic_reid(qf @ gf.T, qp, gp, qc, gc)  # one matmul call, as ours with one chunk
    assert_same_reid(evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=len(qf)), ref)
    assert 0.05 < ref["mAP"] < 0.95


def test_reid_single_match_queries_and_large_gallery_with_few_buckets():
    # one true match per query (the VehicleID shape) and many items around it
    rng = np.random.default_rng(7)
    qf = rng.integers(-3, 4, (50, 4)).astype(np.float32)
    gf = rng.integers(-3, 4, (3000, 4)).astype(np.float32)
    gp = np.arange(3000) + 1
    qp = rng.integers(1, 3001, 50)
    qc, gc = np.zeros(50, np.int64), np.ones(3000, np.int64)
    assert_same_reid(evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=16),
                     classic_reid(qf @ gf.T, qp, gp, qc, gc))


def test_reid_faiss_scores_give_the_same_result():
    qf, gf, qp, gp, qc, gc = random_reid(11, nq=30, ng=200, quantised=True)
    assert (evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=8, use_faiss=True)
            == evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=8))


# ----------------------------------------------------------------------------- search

@pytest.mark.parametrize("use_faiss", [False, True])
def test_topk_search_tie_rule_and_exclude_self(use_faiss):
    rng = np.random.default_rng(0)
    g = rng.integers(-1, 2, (120, 3)).astype(np.float32)   # only 27 distinct vectors: many ties
    q = rng.integers(-1, 2, (25, 3)).astype(np.float32)
    expect = np.argsort(-(q @ g.T), axis=1, kind="stable")
    for k in (1, 6, 120, 500):
        scores, idx = topk_search(q, g, k, chunk_size=7, use_faiss=use_faiss)
        assert np.array_equal(idx, expect[:, :min(k, 120)])
        assert np.array_equal(scores, np.take_along_axis(q @ g.T, idx, 1))
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    _, idx = topk_search(g, g, 10, chunk_size=16, use_faiss=use_faiss, exclude_self=True)
    assert np.array_equal(idx, np.argsort(-sim, axis=1, kind="stable")[:, :10])
    with pytest.raises(DataError, match="exclude_self needs the same set"):
        topk_search(q, g, 3, exclude_self=True)


class AdversarialIndex:
    """Exact inner-product search that keeps and returns the HIGHEST indices among ties
    (faiss gives no tie guarantee; CPU flat happens to keep the lowest)."""

    def __init__(self, g):
        self.g = g

    def search(self, q, k):
        sim = q @ self.g.T
        order = np.lexsort((-np.arange(len(self.g))[None].repeat(len(q), 0), -sim), axis=1)[:, :k]
        return np.take_along_axis(sim, order, 1), order


def test_faiss_path_widens_searches_with_ties_across_the_boundary():
    from ppufo.metric.search import _topk_faiss_chunk
    g = np.repeat(np.eye(3, dtype=np.float32), 40, axis=0)    # 40 exact copies per direction
    q = np.array([[1, 0, 0], [0, 1, 0.5], [0, 0, 1]], np.float32)
    for k in (1, 5, 39, 40, 41, 120):
        scores, idx = _topk_faiss_chunk(AdversarialIndex(g), q, k, len(g))
        assert np.array_equal(idx, np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k])


# ----------------------------------------------------------------------------- verification

def insightface_verification(emb, issame, folds=10):
    """insightface calculate_roc accuracy part, loops as written there (sklearn KFold split)."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(np.subtract(emb[0::2], emb[1::2])), 1)
    n = len(issame)
    accs, best = [], []
    for test in kfold_indices(n, folds):
        train = np.setdiff1d(np.arange(n), test)
        acc_train = np.zeros(len(thresholds))
        for t, th in enumerate(thresholds):
            pred = np.less(dist[train], th)
            acc_train[t] = (np.sum(pred & issame[train]) + np.sum(~pred & ~issame[train])) / len(train)
        b = np.argmax(acc_train)
        pred = np.less(dist[test], thresholds[b])
        accs.append((np.sum(pred & issame[test]) + np.sum(~pred & ~issame[test])) / len(test))
        best.append(thresholds[b])
    return np.mean(accs), np.std(accs), np.mean(best)


def test_kfold_split_is_sklearns():
    # sklearn KFold(3).split(range(7)) test folds: the first 7 % 3 = 1 fold gets the extra item
    assert [f.tolist() for f in kfold_indices(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(f) for f in kfold_indices(6000, 10)] == [600] * 10
    with pytest.raises(ConfigError, match="nrof_folds=11"):
        kfold_indices(10, 11)


@pytest.mark.parametrize("seed", range(3))
def test_verification_matches_insightface_loops(seed):
    rng = np.random.default_rng(seed)
    p = 203  # folds of 21 and 20 pairs
    emb = rng.standard_normal((2 * p, 8)).astype(np.float32)
    issame = rng.random(p) < 0.5
    emb[1::2][issame] = emb[0::2][issame] + 0.6 * rng.standard_normal((issame.sum(), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = evaluate_verification(emb, issame)
    mean, std, thr = insightface_verification(emb, issame)
    assert r["accuracy_mean"] == pytest.approx(mean, abs=1e-6)
    assert r["accuracy_std"] == pytest.approx(std, abs=1e-6)
    assert r["best_threshold_mean"] == pytest.approx(thr, abs=1e-6)
    assert 0.6 < r["accuracy_mean"] < 1.0 and r["num_pairs"] == p


def test_verification_constructed_case_with_known_accuracy():
    # 100 pairs of unit vectors in 2-D: "same" pairs at squared distance 0.555 (cos 0.7225, off
    # the 0.01 threshold grid so float rounding cannot matter),
    # "different" pairs at 2.0 (orthogonal), except "same" pair 36 at 3.0 (cos -0.5).
    # Folds of 10 pairs. Any threshold in (0.555, 2.0] gets every training pair right except
    # pair 36 and no threshold does better, so each fold takes the first such, 0.56.
    # Fold 3 (pairs 30..39) then misses pair 36: accuracies [1]*3 + [0.9] + [1]*6,
    # mean 0.99, std sqrt((9 * 0.01**2 + 0.09**2) / 10) = 0.03.
    p = 100
    issame = np.arange(p) % 2 == 0
    angle = np.where(issame, np.arccos(0.7225), np.pi / 2)
    angle[36] = np.arccos(-0.5)
    emb = np.zeros((2 * p, 2), np.float32)
    emb[0::2, 0] = 1
    emb[1::2] = np.stack([np.cos(angle), np.sin(angle)], 1)
    r = evaluate_verification(emb, issame)
    assert pair_distances(emb)[36] == pytest.approx(3.0, abs=1e-6)
    assert r["accuracy_mean"] == pytest.approx(0.99, abs=1e-12)
    assert r["accuracy_std"] == pytest.approx(0.03, abs=1e-12)
    assert r["best_threshold_mean"] == pytest.approx(0.56) and r["best_threshold_std"] < 1e-12
    # identical "same" pairs: distance exactly 0, and 0 < 0.00 is false, so the first
    # threshold that accepts them is 0.01 (a "<=" rule would pick 0.00)
    emb[1::2][issame] = emb[0::2][issame]
    r = evaluate_verification(emb, issame)
    assert r["best_threshold_mean"] == pytest.approx(0.01) and r["accuracy_mean"] == 1.0
    with pytest.raises(DataError, match="201 embeddings for 100 pairs"):
        evaluate_verification(np.zeros((201, 2)), issame)


# ----------------------------------------------------------------------------- Recall@K

def brute_recall(f, labels, ks, exclude):
    n = len(f)
    sim = f @ f.T
    first = []
    for i in range(n):
        if exclude == "self":
            others = np.delete(np.arange(n), i)
            ranked = others[np.argsort(-sim[i, others], kind="stable")]
        else:  # the UFO reference: rank everything, drop the first column
            ranked = np.argsort(-sim[i], kind="stable")[1:]
        hit = np.flatnonzero(labels[ranked] == labels[i])
        first.append(hit[0] + 1 if len(hit) else n + 1)
    first = np.array(first)
    alone = np.array([np.sum(labels == lb) == 1 for lb in labels])  # nothing to find
    if exclude != "self":  # the reference scores every query
        alone[:] = False
    return {f"recall@{k}": float(np.mean(first[~alone] <= min(k, n - 1))) for k in ks}


def test_recall_hand_computed_self_vs_first_hit():
    # items: 0 = x (label 5), 1 = x again (label 7, an exact duplicate), 2 = y (label 5),
    # 3 = z (label 7); x = [1, 0], y = [0.75, 0.5], z = [0, 1]:
    # x.x = 1, x.y = 0.75, x.z = 0, y.y = 0.8125, y.z = 0.5, z.z = 1
    # exclude="self":  q0 -> [1 x, 2 hit] first hit 2; q1 -> [0 x, 2 x, 3 hit] 3;
    #   q2 -> [0 hit] 1; q3 -> [2 x, 0 x, 1 hit] (tie 0/1: lower index) 3
    #   R@1 = 1/4, R@2 = 2/4, R@3 = 1, R@10 clamps to R@3
    # exclude="first_hit": q0 ranks [0, 1, 2, 3], drops 0 -> [1 x, 2 hit] 2; q1 ranks [0, 1, ...],
    #   drops 0 (not itself!) -> [1 = itself, hit] 1; q2 drops itself -> [0 hit] 1; q3 -> 3
    #   R@1 = 2/4, R@2 = 3/4, R@3 = 1
    f = np.array([[1, 0], [1, 0], [0.75, 0.5], [0, 1]], np.float32)
    labels = np.array([5, 7, 5, 7])
    counts = {"num_queries": 4, "num_queries_without_match": 0}
    for use_faiss in (False, True):
        r = evaluate_recall_at_k(f, labels, ks=(1, 2, 3, 10), use_faiss=use_faiss)
        assert r == {"recall@1": 1 / 4, "recall@2": 2 / 4, "recall@3": 1.0, "recall@10": 1.0, **counts}
        r = evaluate_recall_at_k(f, labels, ks=(1, 2, 3), use_faiss=use_faiss, exclude="first_hit")
        assert r == {"recall@1": 2 / 4, "recall@2": 3 / 4, "recall@3": 1.0, **counts}


def test_recall_leaves_singleton_labels_out_and_counts_them():
    # the 3-item set of the test above without z: x's duplicate (label 7) is alone. exclude="self":
    # q0 -> first hit 2, q2 -> 1, q1 left out -> R@1 1/2, R@2 1 (counted in: 1/3, 2/3);
    # exclude="first_hit" keeps every query, as the reference: q0 ranks [0, 1, 2], drops 0 -> 2;
    # q1 drops 0 -> itself first, a hit -> 1; q2 -> 1: R@1 2/3, R@2 1
    f = np.array([[1, 0], [1, 0], [0.75, 0.5]], np.float32)
    labels = np.array([5, 7, 5])
    counts = {"num_queries": 3, "num_queries_without_match": 1}
    for use_faiss in (False, True):
        r = evaluate_recall_at_k(f, labels, ks=(1, 2), use_faiss=use_faiss)
        assert r == {"recall@1": 0.5, "recall@2": 1.0, **counts}
        r = evaluate_recall_at_k(f, labels, ks=(1, 2), use_faiss=use_faiss, exclude="first_hit")
        assert r == {"recall@1": 2 / 3, "recall@2": 1.0, **counts}
    with pytest.raises(DataError, match="each of the 3 items has a label no other item has"):
        evaluate_recall_at_k(f, np.array([5, 7, 6]))


@pytest.mark.parametrize("exclude", ["self", "first_hit"])
@pytest.mark.parametrize("quantised", [True, False])
def test_recall_matches_brute_force(exclude, quantised):
    rng = np.random.default_rng(3)
    n = 180
    if quantised:  # exact scores, many ties and exact duplicates
        f = rng.integers(-1, 2, (n, 4)).astype(np.float32)
    else:
        f = rng.standard_normal((n, 16)).astype(np.float32)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
    labels = rng.integers(0, 45, n)
    alone = int(np.sum(np.bincount(labels)[labels] == 1))
    ks = (1, 5, 50, 1000)
    expect = brute_recall(f, labels, ks, exclude)
    chunks = (5, 64, n) if quantised else (n,)
    for chunk in chunks:
        for use_faiss in (False, True):
            got = evaluate_recall_at_k(f, labels, ks, chunk, use_faiss, exclude)
            for k in ks:
                assert got[f"recall@{k}"] == pytest.approx(expect[f"recall@{k}"], abs=1e-6)
            assert got["num_queries_without_match"] == alone > 0  # labels drawn once
    assert 0 < expect["recall@1"] < expect["recall@50"] <= 1


def test_recall_rejects_bad_options():
    f = np.eye(3, dtype=np.float32)
    with pytest.raises(ConfigError, match="exclude='query'"):
        evaluate_recall_at_k(f, np.arange(3), exclude="query")
    with pytest.raises(DataError, match="labels must be 1-D with 3 entries"):
        evaluate_recall_at_k(f, np.arange(4))


# ----------------------------------------------------------------------------- VehicleID

def test_vehicleid_is_seeded_and_equals_a_per_repeat_brute_force():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(40), rng.integers(1, 6, 40))       # id 0 is ordinary here
    f = rng.integers(-2, 3, (len(pids), 6)).astype(np.float32)
    f += 2 * np.eye(6, dtype=np.float32)[pids % 6]
    a = evaluate_vehicleid(f, pids, repeats=4, seed=3, topk=(1, 5), chunk_size=9)
    assert a == evaluate_vehicleid(f, pids, repeats=4, seed=3, topk=(1, 5))
    assert a != evaluate_vehicleid(f, pids, repeats=4, seed=4, topk=(1, 5))
    runs = []
    for g in gallery_draws(pids, 4, 3):
        assert len(np.unique(pids[g])) == g.sum() == 40            # one image per identity
        q = ~g
        # ids + 1: id 0 is ordinary in VehicleID but a distractor for the Market1501 loop
        ref = classic_reid(f[q] @ f[g].T, pids[q] + 1, pids[g] + 1, np.zeros(q.sum()), np.ones(g.sum()))
        runs.append((ref["cmc"][0], ref["cmc"][4], ref["mAP"]))
    runs = np.array(runs)
    assert a["rank1"] == pytest.approx(runs[:, 0].mean(), abs=1e-12)
    assert a["rank5"] == pytest.approx(runs[:, 1].mean(), abs=1e-12)
    assert a["mAP"] == pytest.approx(runs[:, 2].mean(), abs=1e-12)
    assert a["mAP_std"] == pytest.approx(runs[:, 2].std(), abs=1e-12)
    assert a["repeats"] == 4 and a["num_gallery"] == 40 and a["num_queries"] == len(pids) - 40
    one = evaluate_vehicleid(f, pids, repeats=10, seed=3, ufo_compat=True)
    assert one["repeats"] == 1 and one["rank1"] == pytest.approx(runs[0, 0]) and one["rank1_std"] == 0


# ----------------------------------------------------------------------------- re-ranking

def dense_rerank(qf, gf, k1, k2, lam):
    """The classic re_ranking (person_re_ranking / reid-strong-baseline), dense, float64."""
    nq = len(qf)
    feat = np.concatenate([qf, gf]).astype(np.float64)
    n = len(feat)
    sq = (feat ** 2).sum(1)
    d = np.maximum(sq[:, None] + sq[None] - 2 * feat @ feat.T, 0)
    d = np.transpose(d / np.max(d, axis=0))
    rank = np.argsort(d, kind="stable")
    v = np.zeros_like(d)

    def recip(i, k):
        fwd = rank[i, :k + 1]
        return fwd[np.where(rank[fwd, :k + 1] == i)[0]]

    for i in range(n):
        ki = recip(i, k1)
        exp = ki
        for c in ki:
            kc = recip(c, int(np.around(k1 / 2)))
            if len(np.intersect1d(kc, ki)) > 2 / 3 * len(kc):
                exp = np.append(exp, kc)
        exp = np.unique(exp)
        w = np.exp(-d[i, exp])
        v[i, exp] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    m = np.stack([np.minimum(v[i], v).sum(1) for i in range(nq)])
    return ((1 - m / (2 - m)) * (1 - lam) + d[:nq] * lam)[:, nq:]


def clustered(seed, nq=30, ng=150, n_ids=12, dim=16, noise=0.8):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_ids, dim))
    qp, gp = rng.integers(1, n_ids, nq), rng.integers(1, n_ids, ng)
    qf = (centers[qp] + noise * rng.standard_normal((nq, dim))).astype(np.float32)
    gf = (centers[gp] + noise * rng.standard_normal((ng, dim))).astype(np.float32)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    return qf, gf, qp, gp, rng.integers(0, 4, nq), rng.integers(0, 4, ng)


def test_rerank_matches_the_classic_dense_code_and_keeps_map():
    qf, gf, qp, gp, qc, gc = clustered(0)
    for k1, k2 in ((20, 6), (7, 3), (5, 1)):
        got = k_reciprocal_rerank(qf, gf, k1, k2, 0.3, chunk_size=17)
        assert got.shape == (30, 150) and got.dtype == np.float32
        np.testing.assert_allclose(got, dense_rerank(qf, gf, k1, k2, 0.3), atol=1e-5)
    # noisy clusters: neighbours of neighbours help, re-ranking must not lower mAP
    plain = METRICS.build({"name": "ReIDMetric"})(qf, gf, qp, gp, qc, gc)
    rr = METRICS.build({"name": "ReIDMetric", "re_ranking": True})(qf, gf, qp, gp, qc, gc)
    assert 0.2 < plain["mAP"] < 0.95 and rr["mAP"] >= plain["mAP"]
    with pytest.raises(ConfigError, match="k2"):
        k_reciprocal_rerank(qf, gf, k1=5, k2=9)


def test_average_query_expansion_is_fastreid_aqe():
    qf, gf, *_ = clustered(1, nq=10, ng=40)
    q2, g2 = average_query_expansion(qf, gf, qe_k=3, alpha=3.0)
    feat = np.concatenate([qf, gf])
    sim = feat @ feat.T
    nn = np.argsort(-sim, axis=1, kind="stable")[:, :3]   # itself first
    expect = np.stack([(feat[nn[i]] * sim[i, nn[i], None] ** 3).mean(0) for i in range(50)])
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(np.concatenate([q2, g2]), expect, atol=1e-5)


# ----------------------------------------------------------------------------- registry

def test_registry_protocol_defaults_headlines_and_injected_config():
    assert {build_protocol(n).metric for n in PROTOCOLS.names()} <= set(METRICS.names())
    injected = {"chunk_size": 64, "use_faiss": True, "ufo_compat": True}
    rec = METRICS.build({"name": "RecallAtK", "ks": [1, 2]}, **injected)
    assert rec.exclude == "first_hit" and rec.use_faiss and rec.chunk_size == 64
    assert METRICS.build({"name": "VehicleIDMetric"}, **injected).ufo_compat
    METRICS.build({"name": "VerificationMetric"}, **injected)       # takes none of them
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['topk_typo'\]"):
        METRICS.build({"name": "ReIDMetric", "topk_typo": [1]})
    with pytest.raises(ConfigError, match="exclude"):
        METRICS.build({"name": "RecallAtK", "exclude": "none"})

    qf, gf, qp, gp, qc, gc = clustered(2)
    reid = METRICS.build({"name": "ReIDMetric", "query_expansion": True})(qf, gf, qp, gp, qc, gc)
    assert all(isinstance(v, (int, float)) for v in reid.values())
    assert set(reid) == {"rank1", "rank5", "rank10", "mAP", "mINP", "num_queries", "num_valid_queries",
                         "num_queries_without_match"}
    assert build_protocol("reid").headline({"rank1": 0.964, "mAP": 0.926}) == "96.40/92.60"
    assert build_protocol("verification").headline({"accuracy_mean": 0.99817, "accuracy_std": 0.001}) == "99.82"
    assert build_protocol("recall_at_k").headline({"recall@1": 0.8905, "recall@10": 0.95}) == "89.05"
    assert build_protocol("vehicleid").main_score({"rank1": 0.9, "mAP": 0.8}) == 0.9
    assert build_protocol("verification").main_score({"accuracy_mean": 0.99}) == 0.99
    assert build_protocol("reid").main_score({"x": 1}) is None


def test_rank_lists_are_checked_naming_the_key():
    from ppufo.metric import RecallAtK, ReIDMetric
    assert ReIDMetric(topk=[1, 3]).topk == (1, 3) and RecallAtK(ks=np.array([1, 2]).tolist()).ks == (1, 2)
    with pytest.raises(ConfigError, match=r"^ReIDMetric\.topk\.1: 0 is out of range; allowed: >= 1$"):
        ReIDMetric(topk=[1, 0])
    with pytest.raises(ConfigError, match=r"^RecallAtK\.ks: expected at least one item, got \[\]$"):
        RecallAtK(ks=[])
    with pytest.raises(ConfigError, match=r"^Sets\.sop\.metric\.ks\.0: expected int, got str '1'$"):
        METRICS.build({"name": "RecallAtK", "ks": ["1"]}, where="Sets.sop.metric")
