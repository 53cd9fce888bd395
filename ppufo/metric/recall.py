"""Recall@K, every item querying all others (SOP protocol).

Recall@K = share of queries with a same-label item in their top K; K clamps to N - 1 (the
list length). A query whose label no other item has (a singleton) has nothing to retrieve:
with exclude="self" it is left out of the share, as a ReID query without a match; with
"first_hit" it stays in, as the UFO reference counts it. Either way it is counted in
``num_queries_without_match`` (SOP has no singleton, so its numbers are those of the
standard protocol). exclude="self" removes the query by index (the standard protocol);
exclude="first_hit" ranks all N items and drops the first one, whatever it is (the UFO
reference: faiss top K+1, first column dropped; if the query is not first, e.g. behind an
exact duplicate, that duplicate is dropped instead and the query itself counts as a hit).
Ties: lower index first (search.py).

numpy path: no top-k list is built. Only the position of the best same-label item matters,
so it is counted (items with a higher score, or an equal score and a lower index) in two
passes over each [chunk, N] score block. faiss path: exact top-K lists from IndexFlatIP.
Both give identical results on identical scores. Memory: O(chunk_size x N) for numpy (25 MB
at N=20k); the faiss path also holds the N x K lists (~730 MB for SOP at K=1000) and is ~8x
slower on CPU, so it is mainly for parity with faiss deployments.
"""
import numpy as np

from ..utils.errors import ConfigError, DataError
from .reid import _Gallery
from .search import as_features, as_ids, check_chunk, score_chunks, topk_search


def _count_ahead(sim, vals, cols):
    """Per row r: items with sim > vals[r], or == vals[r] at a column below cols[r]."""
    ahead = np.count_nonzero(sim > vals[:, None], axis=1)
    eq = sim == vals[:, None]
    ties = np.flatnonzero(np.count_nonzero(eq, axis=1) > 1)
    for r in ties:  # rare with real features
        ahead[r] += np.count_nonzero(eq[r, :cols[r]])
    return ahead


def _best_two(sim, rows, cols, c):
    """Best and second-best (score desc, index asc) of the (rows, cols) items of each row;
    -1 where a row has fewer."""
    order = np.lexsort((cols, -sim[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, "left")   # place within its row
    best = np.full((2, c), -1, np.int64)
    for k in (0, 1):
        best[k, rows[rank == k]] = cols[rank == k]
    return best


def _positions(sim, s, labels, groups, exclude):
    """1-based position of the first same-label hit in each query's list (n + 1 = none)."""
    c, n = sim.shape
    q = np.arange(s, s + c)
    rows, cols = groups.same_id(labels[q], np.zeros(c, bool))
    r_idx = np.arange(c)
    if exclude == "self":
        other = cols != q[rows]
        best = _best_two(sim, rows[other], cols[other], c)[0]
        has = best >= 0
        v = sim[r_idx, np.maximum(best, 0)]
        ahead = _count_ahead(sim, v, np.maximum(best, 0))
        self_v = sim[r_idx, q]
        self_ahead = (self_v > v) | ((self_v == v) & (q < best))
        return np.where(has, ahead - self_ahead + 1, n + 1)
    # first_hit: rank all n items (the query is a same-label item), drop position 1
    b1, b2 = _best_two(sim, rows, cols, c)
    pos1 = _count_ahead(sim, sim[r_idx, b1], b1) + 1
    pos2 = np.full(c, n + 1)
    two = b2 >= 0
    if two.any():
        sub = sim if two.all() else sim[two]
        pos2[two] = _count_ahead(sub, sim[r_idx[two], b2[two]], b2[two]) + 1
    return np.where(pos1 == 1, pos2, pos1) - 1


def evaluate_recall_at_k(features, labels, ks=(1, 10, 100, 1000), chunk_size=256, use_faiss=False,
                         exclude="self"):
    """-> {"recall@K": share of queries with a same-label item in the top K, for K in ks;
    "num_queries": N; "num_queries_without_match": items whose label no other item has (left
    out of every share with exclude="self")}. DataError if every label is a singleton."""
    where = "evaluate_recall_at_k"
    if exclude not in ("self", "first_hit"):
        raise ConfigError(f"{where}: exclude={exclude!r}; expected 'self' or 'first_hit'")
    check_chunk(chunk_size, where)
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ConfigError(f"{where}: ks must be positive, got {ks}")
    f = as_features(features, "features", where)
    n = len(f)
    if n < 2:
        raise DataError(f"{where}: need at least 2 items, got {n}")
    labels = as_ids(labels, n, "labels", where)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    valid = counts[inverse.reshape(-1)] > 1
    if not valid.any():
        raise DataError(f"{where}: each of the {n} items has a label no other item has; "
                        f"there is nothing to retrieve")
    kmax = min(max(ks), n - 1)
    if use_faiss:
        if exclude == "self":
            _, idx = topk_search(f, f, kmax, chunk_size, True, exclude_self=True)
        else:
            _, idx = topk_search(f, f, kmax + 1, chunk_size, True)
            idx = idx[:, 1:]
        hit = labels[idx] == labels[:, None]
        pos = np.where(hit.any(1), hit.argmax(1) + 1, n + 1)
    else:
        groups = _Gallery(labels, np.zeros(n, np.int64))
        pos = np.concatenate([_positions(sim, s, labels, groups, exclude)
                              for s, sim in score_chunks(f, f, chunk_size)])
    scored = pos[valid] if exclude == "self" else pos
    out = {f"recall@{k}": float(np.mean(scored <= min(k, kmax))) for k in ks}
    out.update(num_queries=int(n), num_queries_without_match=int(n - valid.sum()))
    return out
