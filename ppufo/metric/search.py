"""Exact inner-product search in query chunks, numpy or faiss.

Tie rule (both paths, and every metric in this package): items are ranked by score, higher
first; equal scores are ranked by lower gallery index. faiss orders ties arbitrarily, so its
results are re-ordered and boundary ties re-searched with a larger k; both paths therefore
return the same lists whenever they see the same scores (bitwise). Two BLAS libraries may
round the last bit of a dot product differently, which can swap near-equal neighbours.
"""
import numpy as np

from ..utils.config import Field
from ..utils.errors import DataError


def as_features(x, name, where):
    """float32, C-contiguous, 2-D and finite (NaN would make every ranking undefined)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{where}: {name} must be 2-D [N, D], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: {name} must be floating point, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: {name} contains NaN or inf")
    return x


def as_ids(x, n, name, where):
    x = np.asarray(x)
    if x.ndim != 1 or len(x) != n:
        raise DataError(f"{where}: {name} must be 1-D with {n} entries, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"{where}: {name} must be integers, got {x.dtype}")
    return x.astype(np.int64, copy=False)


def check_dims(qf, gf, where):
    if qf.shape[1] != gf.shape[1]:
        raise DataError(f"{where}: query features have dim {qf.shape[1]} but gallery features "
                        f"have dim {gf.shape[1]}")


def check_chunk(chunk_size, where):
    return Field(int, min=1).check(chunk_size, f"{where}: chunk_size")


def score_chunks(qf, gf, chunk_size):
    """Yield (start, qf[start:start+chunk] @ gf.T) into one reused buffer (copy to keep)."""
    buf = np.empty((min(chunk_size, len(qf)), len(gf)), np.float32)
    gt = gf.T
    for s in range(0, len(qf), chunk_size):
        q = qf[s:s + chunk_size]
        yield s, np.matmul(q, gt, out=buf[:len(q)])


def order_rows(scores, idx):
    """Sort each row by (score desc, index asc)."""
    order = np.lexsort((idx, -scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)


def _topk_numpy_chunk(sim, k):
    """Top k of every row of sim with the tie rule; unsorted -> sorted by order_rows."""
    n = sim.shape[1]
    if k >= n:
        idx = np.broadcast_to(np.arange(n), sim.shape).copy()
        return order_rows(sim.copy(), idx)
    part = np.argpartition(sim, n - k, axis=1)[:, n - k:]  # the k largest, ties arbitrary
    ps = np.take_along_axis(sim, part, 1)
    kth = ps.min(1)
    # argpartition keeps every score > kth; among scores == kth it picks arbitrary ones, so
    # rows with more equal scores than slots get the lowest indices put back
    n_eq_in = (ps == kth[:, None]).sum(1)
    n_eq_all = np.count_nonzero(sim == kth[:, None], axis=1)
    for r in np.flatnonzero(n_eq_all > n_eq_in):
        keep = ps[r] > kth[r]
        eq = np.flatnonzero(sim[r] == kth[r])[:k - keep.sum()]
        part[r] = np.concatenate([part[r][keep], eq])
        ps[r] = sim[r, part[r]]
    return order_rows(ps, part)


def _faiss_index(gf):
    import faiss
    index = faiss.IndexFlatIP(gf.shape[1])
    index.add(gf)
    return index


def _topk_faiss_chunk(index, q, k, n):
    """Top k by faiss with the tie rule: search one extra to see ties across the boundary and
    widen those rows until the boundary is tie-free (or the whole gallery is searched)."""
    kk = min(k + 1, n)
    scores, idx = index.search(q, kk)
    if kk > k:
        todo = np.flatnonzero(scores[:, k - 1] == scores[:, k])
        while len(todo):
            kk = min(2 * kk, n)
            s2, i2 = index.search(q[todo], kk)
            done = (s2[:, -1] < s2[:, k - 1]) | (kk == n)
            for r, sr, ir in zip(todo[done], s2[done], i2[done]):
                cut = sr >= sr[k - 1]  # all ties of the k-th score, re-ranked by index below
                sr, ir = order_rows(sr[cut][None], ir[cut][None])
                scores[r, :k], idx[r, :k] = sr[0, :k], ir[0, :k]
            todo = todo[~done]
    return order_rows(scores[:, :k], idx[:, :k])


def topk_search(qf, gf, k, chunk_size=256, use_faiss=False, exclude_self=False):
    """Exact top-k inner-product search.

    qf [Nq, D], gf [Ng, D] float (L2-normalise first for cosine). Returns (scores float32
    [Nq, k'], indices int64 [Nq, k']) best first with k' = min(k, Ng) (Ng - 1 with
    exclude_self). Ties: lower gallery index first (see the module doc). exclude_self: qf and
    gf are the same set and row i never returns item i. Memory O(chunk_size x Ng).
    """
    where = "topk_search"
    qf, gf = as_features(qf, "qf", where), as_features(gf, "gf", where)
    check_dims(qf, gf, where)
    check_chunk(chunk_size, where)
    if exclude_self and len(qf) != len(gf):
        raise DataError(f"{where}: exclude_self needs the same set as query and gallery, "
                        f"got {len(qf)} queries and {len(gf)} gallery items")
    n = len(gf)
    kq = min(int(k), n - 1 if exclude_self else n)
    if kq < 1:
        raise DataError(f"{where}: k={k} with a gallery of {n} (exclude_self={exclude_self}) "
                        f"leaves nothing to return")
    out_s = np.empty((len(qf), kq), np.float32)
    out_i = np.empty((len(qf), kq), np.int64)
    index = _faiss_index(gf) if use_faiss else None
    for s in range(0, len(qf), chunk_size):
        q = qf[s:s + chunk_size]
        rows = np.arange(s, s + len(q))
        kk = kq + 1 if exclude_self else kq
        if use_faiss:
            sc, ix = _topk_faiss_chunk(index, q, kk, n)
        else:
            sc, ix = _topk_numpy_chunk(q @ gf.T, kk)
        if exclude_self:  # drop item i from row i (or the last one if i is not there)
            is_self = ix == rows[:, None]
            is_self[~is_self.any(1), -1] = True
            keep = ~is_self
            sc, ix = sc[keep].reshape(len(q), kq), ix[keep].reshape(len(q), kq)
        out_s[s:s + len(q)], out_i[s:s + len(q)] = sc, ix
    return out_s, out_i
