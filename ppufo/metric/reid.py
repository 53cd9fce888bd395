"""ReID CMC / mAP / mINP with the Market1501 rule, chunked and without sorting the gallery.

Rule (= fast-reid's ``eval_market1501`` on a gallery whose junk was dropped, as its loaders
do): for each query, gallery items with the query's id AND camera are removed (no camera ids,
``q_camids = g_camids = None``: nothing is removed, for sets without cameras); gallery items
with ``junk_pid`` (-1) are ignored; distractors (``distractor_pid`` 0) stay in the ranking and
never match (a query with that id has no valid match); queries without a valid match are
skipped and counted. Ranking: score descending, ties by lower gallery index (what a stable
argsort of ``-score`` gives; fast-reid's default quicksort leaves ties in arbitrary order).

How: only the rank of each true match is needed. Per chunk of queries, the scores are bucketed
by a monotone map over [lowest, highest] true-match score; a histogram gives, for every match,
how many items lie in higher buckets, and only the items sharing a bucket with a match are
compared exactly. Rank among kept items = (items ahead) - (removed same-camera items ahead) + 1.
Cost: the matmul plus ~8 linear passes over the chunk; working memory ~16 bytes x chunk_size
x Ng (~340 MB for MSMT17's 82,161 gallery images at chunk_size 256), no Nq x Ng array.
"""
import numpy as np

from ..utils.errors import ConfigError, DataError
from .search import (_faiss_index, _topk_faiss_chunk, as_features, as_ids, check_chunk,
                     check_dims, score_chunks)

NUM_BUCKETS = 1024


class _Gallery:
    """Gallery ids grouped by value: the same-id items of a query without a pass over Ng."""

    def __init__(self, pids, cams=None):
        self.pids, self.cams = pids, cams  # cams None: no camera rule
        self.order = np.argsort(pids, kind="stable")  # ascending gallery index inside an id
        self.sorted_pids = pids[self.order]

    def same_id(self, q_pids, skip):
        """-> (row, col) of every gallery item with the query's id, rows ascending and cols
        ascending within a row; queries flagged in ``skip`` get none."""
        lo = np.searchsorted(self.sorted_pids, q_pids, "left")
        hi = np.searchsorted(self.sorted_pids, q_pids, "right")
        n = np.where(skip, 0, hi - lo)
        rows = np.repeat(np.arange(len(q_pids)), n)
        starts = np.cumsum(n) - n
        cols = self.order[np.repeat(lo - starts, n) + np.arange(n.sum())]
        return rows, cols


def _group_cumsum(values, group_start):
    """Inclusive cumsum restarting at every True of group_start (1-D, sorted by group)."""
    c = np.cumsum(values)
    first = np.flatnonzero(group_start)
    base = np.repeat(c[first] - values[first], np.diff(np.append(first, len(values))))
    return c - base


def _match_ranks(sim, rows, cols, n_buckets=NUM_BUCKETS):
    """For items (rows[i], cols[i]) of sim [C, N], rows ascending: how many items of the same
    row rank ahead (higher score, or equal score and lower column). Exact; no row is sorted."""
    urows, first = np.unique(rows, return_index=True)
    if len(urows) < len(sim):  # only rows with a queried item
        sim = sim[urows]
        rows = np.repeat(np.arange(len(urows)), np.diff(np.append(first, len(rows))))
    c, n = sim.shape
    width = n_buckets + 2
    # float32 row offsets stay exact below 2**22: split very tall chunks
    step = max(1, (1 << 22) // width)
    if c > step:
        out = np.empty(len(rows), np.int64)
        for s in range(0, c, step):
            m = (rows >= s) & (rows < s + step)
            out[m] = _match_ranks(sim[s:s + step], rows[m] - s, cols[m], n_buckets)
        return out
    vals = sim[rows, cols]
    lo, hi = np.minimum.reduceat(vals, first), np.maximum.reduceat(vals, first)
    # bucket(s) = 1 + floor((s - lo) * scale) clipped to [0, width - 1], plus a row offset:
    # monotone in s within a row, so a higher bucket means a strictly higher score. A row with
    # one distinct matched score gets a huge scale: below / equal / above land in 0 / 1 / top.
    span = hi.astype(np.float64) - lo
    scale = np.minimum((n_buckets - 1) / np.maximum(span, 1e-300), 3e38).astype(np.float32)
    t = np.subtract(sim, lo[:, None])
    with np.errstate(over="ignore"):  # the huge scale overflows to +-inf on purpose
        t *= scale[:, None]
    np.clip(t, -1, n_buckets, out=t)
    t += (np.arange(c) * width + 1).astype(np.float32)[:, None]
    bucket = t.astype(np.int64).ravel()  # truncation of values >= 0 = floor
    del t
    hist = np.bincount(bucket, minlength=c * width)
    # above[b] = items of the same row in buckets higher than b
    above = np.cumsum(hist.reshape(c, width)[:, ::-1], 1)[:, ::-1].ravel() - hist
    flat = rows * n + cols
    b_item = bucket[flat]
    flag = np.zeros(c * width, bool)
    flag[b_item] = True
    cand = np.flatnonzero(flag[bucket])  # items sharing a bucket with some queried item
    cb = bucket[cand]
    order = np.lexsort((cand % n, -sim.ravel()[cand], cb))
    pos = np.empty(len(cand), np.int64)
    pos[order] = np.arange(len(cand))
    within = pos[np.searchsorted(cand, flat)] - np.searchsorted(cb[order], b_item, "left")
    return above[b_item] + within


def _chunk_stats(sim, q_pids, q_cams, gallery, skip):
    """Per query of one chunk: (valid, first-hit rank, AP, INP) over the kept ranking."""
    c = len(sim)
    rows, cols = gallery.same_id(q_pids, skip)
    is_pos = np.ones(len(rows), bool) if q_cams is None else gallery.cams[cols] != q_cams[rows]
    n_pos = np.bincount(rows[is_pos], minlength=c)
    valid = n_pos > 0
    first = np.zeros(c, np.int64)
    ap = np.zeros(c)
    inp = np.zeros(c)
    if not valid.any():
        return valid, first, ap, inp
    # same-id items of valid queries, ordered like the ranking: (row, score desc, col asc)
    sel = valid[rows]
    rows, cols, is_pos = rows[sel], cols[sel], is_pos[sel]
    order = np.lexsort((cols, -sim[rows, cols], rows))
    rows, cols, is_pos = rows[order], cols[order], is_pos[order]
    row_start = np.r_[True, rows[1:] != rows[:-1]]
    k = _group_cumsum(is_pos.astype(np.int64), row_start)           # k-th match of its query
    removed_ahead = _group_cumsum((~is_pos).astype(np.int64), row_start)
    prow, pcol, pk = rows[is_pos], cols[is_pos], k[is_pos]
    rank = _match_ranks(sim, prow, pcol) - removed_ahead[is_pos] + 1  # 1-based, kept items
    ap = np.bincount(prow, weights=pk / rank, minlength=c) / np.maximum(n_pos, 1)
    first[prow[pk == 1]] = rank[pk == 1]
    last = pk == n_pos[prow]
    inp[prow[last]] = n_pos[prow[last]] / rank[last]
    return valid, first, ap, inp


def reid_query_stats(qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_size=256, use_faiss=False,
                     scores=None, junk_pid=-1, distractor_pid=0, where="reid_query_stats"):
    """Per query, under the rule of evaluate_reid (same arguments): (valid [Nq] bool, rank of
    the first true match [Nq] int, AP [Nq], INP [Nq]); 0 where not valid."""
    check_chunk(chunk_size, where)
    if scores is None:
        qf, gf = as_features(qf, "qf", where), as_features(gf, "gf", where)
        check_dims(qf, gf, where)
        nq, ng = len(qf), len(gf)
    else:
        scores = as_features(scores, "scores", where)
        nq, ng = scores.shape
    q_pids, g_pids = as_ids(q_pids, nq, "q_pids", where), as_ids(g_pids, ng, "g_pids", where)
    if (q_camids is None) != (g_camids is None):
        raise DataError(f"{where}: camera ids for the {'gallery' if q_camids is None else 'query'} only; "
                        f"give both (same-id same-camera items removed) or neither (nothing removed)")
    cameras = q_camids is not None
    if cameras:
        q_camids, g_camids = as_ids(q_camids, nq, "q_camids", where), as_ids(g_camids, ng, "g_camids", where)
    keep = np.ones(ng, bool) if junk_pid is None else g_pids != junk_pid
    if not keep.any():
        raise DataError(f"{where}: every gallery item has the junk id {junk_pid}")
    gallery = _Gallery(g_pids[keep], g_camids[keep] if cameras else None)
    skip = np.zeros(nq, bool) if distractor_pid is None else q_pids == distractor_pid

    if scores is not None:
        chunks = ((s, np.ascontiguousarray(scores[s:s + chunk_size] if keep.all()
                                           else scores[s:s + chunk_size][:, keep]))
                  for s in range(0, nq, chunk_size))
    elif use_faiss:
        gk = gf[keep]
        index = _faiss_index(gk)

        def chunks_faiss():  # every gallery item of every query, scattered back by index
            for s in range(0, nq, chunk_size):
                sc, ix = _topk_faiss_chunk(index, qf[s:s + chunk_size], len(gk), len(gk))
                sim = np.empty_like(sc)
                np.put_along_axis(sim, ix, sc, 1)
                yield s, sim
        chunks = chunks_faiss()
    else:
        chunks = score_chunks(qf, gf if keep.all() else gf[keep], chunk_size)

    valid = np.zeros(nq, bool)
    first = np.zeros(nq, np.int64)
    ap, inp = np.zeros(nq), np.zeros(nq)
    for s, sim in chunks:
        sl = slice(s, s + len(sim))
        q_cams = q_camids[sl] if cameras else None
        valid[sl], first[sl], ap[sl], inp[sl] = _chunk_stats(sim, q_pids[sl], q_cams, gallery, skip[sl])
    return valid, first, ap, inp


def evaluate_reid(qf, gf, q_pids, g_pids, q_camids, g_camids, topk=(1, 5, 10), chunk_size=256,
                  use_faiss=False, scores=None, junk_pid=-1, distractor_pid=0):
    """ReID metrics -> dict(mAP, mINP, rank<k> for k in topk, num_queries, num_valid_queries,
    num_queries_without_match).

    qf [Nq, D], gf [Ng, D]: features ranked by inner product (L2-normalise for cosine).
    scores: optional precomputed [Nq, Ng] similarity (higher = closer; pass -distmat for a
    distance such as the re-ranked one), then qf/gf may be None. use_faiss: scores come from
    faiss (exact IndexFlatIP, all Ng neighbours per query; slower, same ranking rule).
    q_camids = g_camids = None: no cameras, no same-camera removal.
    junk_pid / distractor_pid: None disables the rule. Averages are over valid queries (the
    others, e.g. a query whose id is not in the gallery, are counted in
    num_queries_without_match); raises DataError if there is none.
    """
    where = "evaluate_reid"
    topk = tuple(int(k) for k in topk)
    if not topk or min(topk) < 1:
        raise ConfigError(f"{where}: topk must be positive ranks, got {topk}")
    valid, first, ap, inp = reid_query_stats(qf, gf, q_pids, g_pids, q_camids, g_camids, chunk_size,
                                             use_faiss, scores, junk_pid, distractor_pid, where)
    nq, max_k = len(valid), max(topk)
    n_valid = int(valid.sum())
    if n_valid == 0:
        rule = "same id under another camera" if q_camids is not None else "same id"
        raise DataError(f"{where}: none of the {nq} queries has a valid match in the gallery "
                        f"({rule}); check the ids and cameras")
    # one mean over per-query values in query order: independent of chunk_size, and the same
    # reduction as eval_func's np.mean(all_AP) (INP values are even bitwise the same)
    hits = np.bincount(np.minimum(first[valid], max_k + 1) - 1, minlength=max_k + 1)
    cmc = np.cumsum(hits[:max_k]) / n_valid
    out = {f"rank{k}": float(cmc[k - 1]) for k in topk}
    out.update(mAP=float(np.mean(ap[valid])), mINP=float(np.mean(inp[valid])), num_queries=int(nq),
               num_valid_queries=n_valid, num_queries_without_match=int(nq - n_valid))
    return out
