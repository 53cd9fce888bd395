"""Optional post-processing for ReID: k-reciprocal re-ranking and average query expansion.

Both are off by default (the UFO paper reports numbers without them).

k_reciprocal_rerank: Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017, as in the reference ``re_ranking`` of person_re_ranking /
reid-strong-baseline (k1=20, k2=6, lambda=0.3), computed in float32 instead of float16.
The classic code holds several dense (Nq+Ng)^2 arrays (distances, their argsort, V, the
Jaccard matrix): memory O((Nq+Ng)^2), ~1.5 GB per array for Market1501 and ~35 GB for MSMT17.
This version streams the distances in row chunks and keeps the k1+1 nearest neighbours per
item, V as a sparse matrix and the Nq x Ng output: memory O(Nq*Ng + (Nq+Ng)*k1^2); time is
still O((Nq+Ng)^2 * D) for the distances.
"""
import numpy as np
import scipy.sparse as sp

from ..utils.errors import ConfigError
from .search import _topk_numpy_chunk, as_features, check_dims, topk_search


def _reciprocal_sets(ranks, k):
    """Sparse bool [N, N]: row i holds the j among i's first k+1 neighbours that also have i
    among theirs (k-reciprocal neighbours, i itself included)."""
    n = len(ranks)
    fwd = ranks[:, :k + 1]
    back = fwd[fwd]                                   # [N, k+1, k+1]
    mutual = (back == np.arange(n)[:, None, None]).any(2)
    rows = np.repeat(np.arange(n), k + 1)[mutual.ravel()]
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, fwd[mutual])), shape=(n, n))


def k_reciprocal_rerank(qf, gf, k1=20, k2=6, lambda_value=0.3, chunk_size=256):
    """-> re-ranked distance [Nq, Ng] float32 (lower = closer): (1 - lambda) * Jaccard distance
    of k-reciprocal encodings + lambda * squared-L2 distance scaled by each query's maximum."""
    where = "k_reciprocal_rerank"
    if k1 < 1 or not 1 <= k2 <= k1 + 1 or not 0 <= lambda_value <= 1:
        raise ConfigError(f"{where}: need k1 >= 1, 1 <= k2 <= k1 + 1, 0 <= lambda <= 1; got "
                          f"k1={k1}, k2={k2}, lambda={lambda_value}")
    qf, gf = as_features(qf, "qf", where), as_features(gf, "gf", where)
    check_dims(qf, gf, where)
    feat = np.concatenate([qf, gf])
    nq, n = len(qf), len(qf) + len(gf)
    kk = min(k1 + 1, n)
    sq = np.einsum("ij,ij->i", feat, feat)
    ranks = np.empty((n, kk), np.int64)
    row_max = np.empty(n, np.float32)
    orig_qg = np.empty((nq, n - nq), np.float32)     # query x gallery part of the scaled distance
    for s in range(0, n, chunk_size):
        d = feat[s:s + chunk_size] @ feat.T
        d *= -2
        d += sq[s:s + chunk_size, None]
        d += sq[None, :]
        np.maximum(d, 0, out=d)
        row_max[s:s + len(d)] = np.maximum(d.max(1), np.finfo(np.float32).tiny)
        d /= row_max[s:s + len(d), None]
        ranks[s:s + len(d)] = _topk_numpy_chunk(-d, kk)[1]   # nearest first, ties by index
        if s < nq:
            orig_qg[s:min(s + len(d), nq)] = d[:nq - s, nq:]
    k1 = kk - 1
    recip = _reciprocal_sets(ranks, k1)
    half = _reciprocal_sets(ranks, int(np.around(k1 / 2)))
    # expansion: add a candidate's half-size set when it shares more than 2/3 of it with ours
    shared = (recip @ half.T).multiply(recip).tocoo()           # [i, c] = |recip_i & half_c|
    half_size = np.asarray(half.sum(1)).ravel()
    rows, cols = shared.row, shared.col
    ok = shared.data > 2 / 3 * half_size[cols]
    pick = sp.csr_matrix((np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(n, n))
    expand = ((recip + pick @ half) > 0).tocsr()
    # V[i, j] = softmax over the expansion set of -scaled distance
    er, ec = expand.nonzero()
    dist = np.empty(len(er), np.float32)
    for s in range(0, len(er), 65536):
        r, c = er[s:s + 65536], ec[s:s + 65536]
        dd = sq[r] + sq[c] - 2 * np.einsum("ij,ij->i", feat[r], feat[c])
        dist[s:s + 65536] = np.maximum(dd, 0) / row_max[r]
    w = np.exp(-dist)
    w /= np.bincount(er, weights=w, minlength=n)[er]
    v = sp.csr_matrix((w.astype(np.float32), (er, ec)), shape=(n, n))
    if k2 > 1:  # local query expansion: mean of the k2 nearest items' encodings
        qe = sp.csr_matrix((np.full(n * k2, 1 / k2, np.float32),
                            (np.repeat(np.arange(n), k2), ranks[:, :k2].ravel())), shape=(n, n))
        v = (qe @ v).tocsr()
    # Jaccard: m[i, j] = sum_k min(V[i, k], V[j, k]) for queries i, gallery j
    vq, vg = v[:nq].tocsr(), v[nq:].tocsc()
    out = orig_qg
    out *= lambda_value
    ng = n - nq
    for s in range(0, nq, chunk_size):
        blk = vq[s:s + chunk_size].tocoo()
        starts, ends = vg.indptr[blk.col], vg.indptr[blk.col + 1]
        cnt = ends - starts
        take = np.repeat(starts - np.cumsum(cnt) + cnt, cnt) + np.arange(cnt.sum())
        qi = np.repeat(blk.row, cnt)
        mins = np.minimum(np.repeat(blk.data, cnt), vg.data[take])
        m = np.bincount(qi * ng + vg.indices[take], weights=mins,
                        minlength=len(out[s:s + chunk_size]) * ng).reshape(-1, ng)
        out[s:s + len(m)] += (1 - lambda_value) * (1 - m / (2 - m)).astype(np.float32)
    return out


def average_query_expansion(qf, gf, qe_k=5, alpha=3.0, chunk_size=256):
    """alpha-weighted AQE (fast-reid ``aqe``, qe_times=1, the UFO defaults): every query and
    gallery feature becomes the mean of its qe_k nearest features (itself included, cosine
    over query + gallery) weighted by similarity**alpha, then L2-normalised.
    Memory O((Nq + Ng) * D)."""
    where = "average_query_expansion"
    if qe_k < 1:
        raise ConfigError(f"{where}: qe_k must be >= 1, got {qe_k}")
    qf, gf = as_features(qf, "qf", where), as_features(gf, "gf", where)
    check_dims(qf, gf, where)
    feat = np.concatenate([qf, gf])
    norm = feat / np.maximum(np.linalg.norm(feat, axis=1, keepdims=True), 1e-12)
    sims, idx = topk_search(norm, norm, qe_k, chunk_size)
    w = np.power(sims, alpha)
    new = np.empty_like(feat)
    for s in range(0, len(feat), chunk_size):
        sl = slice(s, s + chunk_size)
        new[sl] = np.einsum("nk,nkd->nd", w[sl], feat[idx[sl]]) / idx.shape[1]
    new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
    return new[:len(qf)].astype(np.float32), new[len(qf):].astype(np.float32)
