"""ReID on disjoint fixed-size galleries (ReIDMetric split_ids, ppufo/metric/reid_splits.py)."""
import numpy as np
import pytest

from ppufo.metric import METRICS, ReIDMetric
from ppufo.metric.reid import evaluate_reid
from ppufo.metric.reid_splits import evaluate_reid_splits, identity_splits
from ppufo.metric.rerank import k_reciprocal_rerank
from ppufo.utils.errors import ConfigError


def person_set(seed, n_ids=23, only_ids=5, dim=8):
    """Queries of ids 1..n_ids (2 each, camera 0), a gallery of those ids and of gallery-only ids
    (3 each, camera 1), plus 4 junk (-1) and 3 distractor (0) items and 2 distractor-id queries."""
    rng = np.random.default_rng(seed)
    q_pids = np.r_[np.repeat(np.arange(1, n_ids + 1), 2), [0, 0]]
    g_pids = np.r_[np.repeat(np.arange(1, n_ids + only_ids + 1), 3), [-1] * 4, [0] * 3]
    centers = rng.standard_normal((n_ids + only_ids + 2, dim))
    qf = (centers[q_pids] + 0.9 * rng.standard_normal((len(q_pids), dim))).astype(np.float32)
    gf = (centers[g_pids] + 0.9 * rng.standard_normal((len(g_pids), dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, np.zeros(len(q_pids), int), np.ones(len(g_pids), int)


def test_splits_partition_the_identities_and_share_junk_and_distractors():
    _, _, q, g, _, _ = person_set(0)
    splits = identity_splits(q, g, 5, seed=3)
    assert len(splits) == 4                                  # 23 queried ids // 5
    q_seen, g_seen = np.zeros(len(q), int), np.zeros(len(g), int)
    for i, (mq, mg) in enumerate(splits):
        ids = set(q[mq]) - {0}
        assert 5 <= len(ids) <= 9                            # the remainder spread, none dropped
        assert set(g[mg]) >= ids | {-1, 0}                   # each id's gallery images come along
        assert (set(q[mq]) == ids | {0}) == (i == 0)         # distractor-id queries: first split only
        q_seen += mq
        g_seen += mg
    assert (q_seen == 1).all()                               # every query scored exactly once
    shared = np.isin(g, [-1, 0])
    assert (g_seen[shared] == 4).all() and (g_seen[~shared] == 1).all()
    only = np.isin(g, np.arange(24, 29))                     # gallery-only ids spread over the splits
    assert sorted(len(set(g[only & mg])) for _, mg in splits) == [1, 1, 1, 2]
    again = identity_splits(q, g, 5, seed=3)
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(splits, again))
    other = identity_splits(q, g, 5, seed=4)
    assert any((a[0] != b[0]).any() for a, b in zip(splits, other))


def test_split_result_is_the_mean_of_each_gallery_scored_alone():
    qf, gf, q, g, qc, gc = person_set(1)
    got = evaluate_reid_splits(qf, gf, q, g, qc, gc, 6, seed=0)
    parts = [evaluate_reid(qf[mq], gf[mg], q[mq], g[mg], qc[mq], gc[mg]) for mq, mg in identity_splits(q, g, 6)]
    assert got["splits"] == len(parts) == 3
    for k in ("mAP", "mINP", "rank1", "rank5"):
        assert got[k] == pytest.approx(np.mean([p[k] for p in parts]), abs=1e-12)
    assert got["num_queries"] == len(q) and got["num_queries_without_match"] == 2   # the distractor queries
    whole = evaluate_reid(qf, gf, q, g, qc, gc)
    assert got["mAP"] > whole["mAP"]                          # fewer distractors per query in a small gallery
    one = evaluate_reid_splits(qf, gf, q, g, qc, gc, 23)      # one split: the plain protocol
    assert one["splits"] == 1 and one["mAP"] == whole["mAP"] and one["rank1"] == whole["rank1"]


def test_metric_builds_from_config_and_reranks_each_split_on_its_own():
    qf, gf, q, g, qc, gc = person_set(2)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    metric = METRICS.build({"name": "ReIDMetric", "split_ids": 8, "re_ranking": True, "k1": 6, "k2": 2})
    got = metric(qf, gf, q, g, qc, gc)
    want = []
    for mq, mg in identity_splits(q, g, 8):
        dist = k_reciprocal_rerank(qf[mq], gf[mg], 6, 2, 0.3, 256)
        want.append(evaluate_reid(None, None, q[mq], g[mg], qc[mq], gc[mg], scores=-dist)["mAP"])
    assert got["splits"] == 2 and got["mAP"] == pytest.approx(np.mean(want), abs=1e-12)
    assert ReIDMetric()(qf, gf, q, g, qc, gc)["mAP"] != pytest.approx(got["mAP"])
    with pytest.raises(ConfigError, match="split_ids"):
        METRICS.build({"name": "ReIDMetric", "split_ids": 0})
