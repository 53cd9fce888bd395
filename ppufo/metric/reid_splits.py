"""ReID scored on disjoint galleries of a fixed number of identities, averaged (ReIDMetric
``split_ids``).

mAP on one gallery falls as the gallery grows, and the differences between models shrink with it,
while a small gallery is a noisy sample. Cutting a large set into disjoint sub-galleries of n
queried identities keeps the spread of an n-identity gallery and averages its noise over all of
them, as VeRi-Wild's and VehicleID's fixed-size test sets do. Every queried identity is in exactly
one split (with its queries and gallery images), and so is every gallery-only identity; junk and
distractor items stay in every gallery. Nothing is dropped: the remainder of the identities
spreads over the splits, which therefore hold n to 2n - 1 identities.
"""
import numpy as np

from ..utils.errors import ConfigError
from .reid import evaluate_reid


def identity_splits(q_pids, g_pids, split_ids, seed=0, junk_pid=-1, distractor_pid=0):
    """[(query mask, gallery mask)] of the disjoint splits, in a seeded order of the identities."""
    if int(split_ids) != split_ids or split_ids < 1:
        raise ConfigError(f"ReIDMetric.split_ids: expected a positive number of identities, got {split_ids!r}")
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    shared = np.isin(g_pids, [p for p in (junk_pid, distractor_pid) if p is not None])
    queried = np.setdiff1d(np.unique(q_pids), [p for p in (junk_pid, distractor_pid) if p is not None])
    only = np.setdiff1d(np.unique(g_pids[~shared]), queried)
    rng = np.random.RandomState(seed)
    k = max(1, len(queried) // int(split_ids))
    groups = zip(np.array_split(rng.permutation(queried), k), np.array_split(rng.permutation(only), k))
    # a query of a junk/distractor id has no valid match anywhere: it goes with the first split
    stray = ~np.isin(q_pids, queried)
    return [(np.isin(q_pids, ids) | (stray if i == 0 else False), np.isin(g_pids, np.r_[ids, extra]) | shared)
            for i, (ids, extra) in enumerate(groups)]


def evaluate_reid_splits(qf, gf, q_pids, g_pids, q_camids, g_camids, split_ids, seed=0, junk_pid=-1,
                         distractor_pid=0, evaluate=evaluate_reid):
    """``evaluate`` (evaluate_reid's signature) on each split: its rates averaged over the splits
    (each split weighs the same), its query counts summed, and ``splits`` their number."""
    qf, gf, q_pids, g_pids = (np.asarray(a) for a in (qf, gf, q_pids, g_pids))
    q_camids, g_camids = (None, None) if q_camids is None else (np.asarray(q_camids), np.asarray(g_camids))
    results = []
    for mq, mg in identity_splits(q_pids, g_pids, split_ids, seed, junk_pid, distractor_pid):
        cams = (None, None) if q_camids is None else (q_camids[mq], g_camids[mg])
        results.append(evaluate(qf[mq], gf[mg], q_pids[mq], g_pids[mg], *cams,
                                junk_pid=junk_pid, distractor_pid=distractor_pid))
    out = {k: (int(sum(r[k] for r in results)) if isinstance(v, int) else float(np.mean([r[k] for r in results])))
           for k, v in results[0].items()}
    out["splits"] = len(results)
    return out
