"""VehicleID protocol: one random image per identity is the gallery, all others are queries;
no camera filtering; rank-k / mAP averaged over seeded repeats (numpy Generator(seed)).

A draw = shuffle the test set, the first image of every identity goes to the gallery (uniform
per identity). ufo_compat=True makes a single draw, as the UFO reference does (it shuffles
once, unseeded; ours stays seeded so runs are reproducible). Identities with one image only
sit in the gallery as distractors for everyone else. Id 0 is an ordinary identity here.
"""
import numpy as np

from ..utils.config import Field
from ..utils.errors import DataError
from .reid import evaluate_reid
from .search import as_features, as_ids


def gallery_draws(pids, repeats, seed):
    """Yield a boolean gallery mask per repeat."""
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        order = rng.permutation(len(pids))
        _, first = np.unique(pids[order], return_index=True)
        mask = np.zeros(len(pids), bool)
        mask[order[first]] = True
        yield mask


def evaluate_vehicleid(features, pids, repeats=10, seed=0, topk=(1, 5), chunk_size=256,
                       ufo_compat=False):
    """-> dict(rank<k>, mAP: means over repeats; rank<k>_std, mAP_std; repeats, num_queries,
    num_gallery)."""
    where = "evaluate_vehicleid"
    repeats = Field(int, min=1).check(repeats, f"{where}: repeats")
    f = as_features(features, "features", where)
    pids = as_ids(pids, len(f), "pids", where)
    if len(np.unique(pids)) == len(pids):
        raise DataError(f"{where}: every identity has a single image, so there is no query")
    repeats = 1 if ufo_compat else int(repeats)
    runs = []
    for g in gallery_draws(pids, repeats, seed):
        q = ~g
        zeros = np.zeros(q.sum(), np.int64)
        runs.append(evaluate_reid(f[q], f[g], pids[q], pids[g], zeros, np.ones(g.sum(), np.int64),
                                  topk, chunk_size, junk_pid=None, distractor_pid=None))
    keys = [f"rank{k}" for k in topk] + ["mAP"]
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys})
    out.update(repeats=repeats, num_queries=int(runs[0]["num_queries"]),
               num_gallery=int(len(np.unique(pids))))
    return out
