"""Exact similarity ranking in query chunks (numpy or faiss inner product)."""
import numpy as np


def similarity_chunks(qf, gf, chunk_size=256):
    """Yield (start, scores [chunk, Ng]) of inner products."""
    for s in range(0, len(qf), chunk_size):
        yield s, qf[s:s + chunk_size] @ gf.T


def topk_search(qf, gf, k, chunk_size=256, use_faiss=False):
    """-> (scores, indices) [Nq, k], best first; ties broken by lower gallery index."""
    k = min(k, len(gf))
    if use_faiss:
        import faiss
        index = faiss.IndexFlatIP(gf.shape[1])
        index.add(np.ascontiguousarray(gf, dtype=np.float32))
        return index.search(np.ascontiguousarray(qf, dtype=np.float32), k)
    scores, idx = [], []
    for _, sim in similarity_chunks(qf, gf, chunk_size):
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.tile(np.arange(sim.shape[1]), (len(sim), 1))
        ps = np.take_along_axis(sim, part, 1)
        order = np.lexsort((part, -ps), axis=1)
        idx.append(np.take_along_axis(part, order, 1))
        scores.append(np.take_along_axis(ps, order, 1))
    return np.concatenate(scores), np.concatenate(idx)
