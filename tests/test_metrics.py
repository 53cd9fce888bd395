import numpy as np
import pytest

from ppufo.metric import METRICS, headline, main_score
from ppufo.metric.recall import evaluate_recall_at_k
from ppufo.metric.reid import evaluate_reid
from ppufo.metric.verification import evaluate_verification, kfold_indices
from ppufo.utils.errors import DataError


def loop_reid(qf, gf, qp, gp, qc, gc, topk=(1, 5, 10)):
    """The classic per-query eval_func (Market1501 rule), for reference."""
    cmc, aps, valid = np.zeros(max(topk)), [], 0
    for i in range(len(qf)):
        order = np.argsort(-(gf @ qf[i]), kind="stable")
        keep = ~(((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gp[order] == -1))
        m = (gp[order] == qp[i])[keep]
        if not m.any():
            continue
        valid += 1
        first = np.argmax(m)
        cmc[first:] += 1
        hits = np.cumsum(m)
        aps.append(np.mean([hits[j] / (j + 1) for j in np.nonzero(m)[0]]))
    return {f"rank{k}": cmc[k - 1] / valid for k in topk} | {"mAP": np.mean(aps)}


def test_reid_hand_computed_with_camera_filter_junk_and_distractor():
    # one query (id 1, cam 0); gallery ranked by similarity 0.9 .. 0.4:
    # g0 id1 cam0 (removed: same id+cam), g1 id2 (wrong), g2 id1 cam1 (hit at kept rank 2),
    # g3 junk -1 (ignored), g4 id0 distractor (wrong), g5 id1 cam2 (hit at kept rank 4)
    sims = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    gf = np.stack([sims, np.sqrt(1 - sims ** 2)], 1).astype(np.float32)
    qf = np.array([[1.0, 0.0]], np.float32)
    gp = np.array([1, 2, 1, -1, 0, 1])
    gc = np.array([0, 0, 1, 0, 0, 2])
    r = evaluate_reid(qf, gf, np.array([1]), gp, np.array([0]), gc, topk=(1, 2, 3))
    # kept ranking: id2, id1, id0, id1 -> first hit at rank 2; AP = (1/2 + 2/4) / 2 = 0.5
    assert (r["rank1"], r["rank2"], r["rank3"]) == (0.0, 1.0, 1.0)
    assert r["mAP"] == pytest.approx(0.5)
    assert r["mINP"] == pytest.approx(2 / 4)


def test_reid_skips_queries_without_valid_match_and_counts_them():
    qf = np.eye(2, dtype=np.float32)
    gf = np.eye(2, dtype=np.float32)
    # query 0's only match is same camera -> skipped; query 1 matches under another camera
    r = evaluate_reid(qf, gf, np.array([5, 6]), np.array([5, 6]), np.array([0, 0]), np.array([0, 1]))
    assert r["num_valid_queries"] == 1 and r["num_queries"] == 2 and r["rank1"] == 1.0
    with pytest.raises(DataError, match="no query has a valid match"):
        evaluate_reid(qf[:1], gf[:1], np.array([5]), np.array([5]), np.array([0]), np.array([0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reid_equals_per_query_loop_with_ties_and_any_chunk(seed):
    rng = np.random.default_rng(seed)
    gp = rng.integers(-1, 20, 300)
    gc = rng.integers(0, 4, 300)
    gf = rng.standard_normal((300, 8)).astype(np.float32)
    gf[10] = gf[11]  # an exact tie
    qp, qc = rng.integers(1, 20, 60), rng.integers(0, 4, 60)
    qf = rng.standard_normal((60, 8)).astype(np.float32)
    ref = loop_reid(qf, gf, qp, gp, qc, gc)
    for chunk in (7, 256):
        got = evaluate_reid(qf, gf, qp, gp, qc, gc, chunk_size=chunk)
        for k in ref:
            assert got[k] == pytest.approx(ref[k], abs=1e-12)


def brute_verification(emb, issame, folds=10):
    th = np.arange(0, 4, 0.01)
    d = ((emb[0::2] - emb[1::2]) ** 2).sum(1)
    accs = []
    for test in kfold_indices(len(issame), folds):
        train = [i for i in range(len(issame)) if i not in set(test)]
        best = max(range(len(th)), key=lambda t: (np.mean((d[train] < th[t]) == issame[train]), -t))
        accs.append(np.mean((d[test] < th[best]) == issame[test]))
    return np.mean(accs), np.std(accs)


def test_verification_matches_brute_force_and_kfold_split():
    assert [list(f) for f in kfold_indices(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]  # sklearn KFold
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((120, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    issame = rng.random(60) < 0.5
    emb[1::2][issame] = emb[0::2][issame] + 0.1 * rng.standard_normal((issame.sum(), 4))
    r = evaluate_verification(emb, issame)
    mean, std = brute_verification(emb, issame)
    assert r["accuracy"] == pytest.approx(mean, abs=1e-6) and r["accuracy_std"] == pytest.approx(std, abs=1e-6)
    assert r["accuracy"] > 0.8
    with pytest.raises(DataError, match="121 embeddings for 60 pairs"):
        evaluate_verification(np.zeros((121, 4)), issame)


@pytest.mark.parametrize("use_faiss", [False, True])
def test_recall_at_k_matches_brute_force(use_faiss):
    rng = np.random.default_rng(3)
    f = rng.standard_normal((200, 16)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    labels = rng.integers(0, 40, 200)
    got = evaluate_recall_at_k(f, labels, ks=(1, 5, 50), chunk_size=33, use_faiss=use_faiss)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)  # the query itself is excluded
    order = np.argsort(-sim, axis=1, kind="stable")
    for k in (1, 5, 50):
        expect = np.mean([(labels[order[i, :k]] == labels[i]).any() for i in range(200)])
        assert got[f"recall@{k}"] == pytest.approx(expect, abs=1e-6)


def test_vehicleid_protocol_is_seeded_and_registry_headlines():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(30), 4)
    f = rng.standard_normal((120, 8)).astype(np.float32) + 3 * np.eye(8)[pids % 8]
    m = METRICS.build({"name": "VehicleIDMetric", "repeats": 3})
    a, b = m(f, pids), m(f, pids)
    assert a == b and a["repeats"] == 3 and 0 < a["rank1"] <= 1
    r = {"rank1": 0.9, "mAP": 0.8}
    assert headline(r) == "90.00/80.00" and main_score(r) == 0.9
    assert headline({"accuracy": 0.995, "accuracy_std": 0.001}) == "99.50±0.10"
