"""ReID mAP / CMC / mINP with the Market1501 rule: gallery items with the query's id AND camera
are removed; junk (pid -1) is ignored; distractors (pid 0) never match."""
import numpy as np

from ..utils.errors import DataError
from .search import similarity_chunks


def evaluate_reid(qf, gf, q_pids, g_pids, q_camids, g_camids, topk=(1, 5, 10), chunk_size=256):
    if qf.shape[1] != gf.shape[1]:
        raise DataError(f"reid: query dim {qf.shape[1]} != gallery dim {gf.shape[1]}")
    max_k = max(topk)
    cmc_sum = np.zeros(max_k)
    ap_sum = inp_sum = 0.0
    valid_q = 0
    g_junk = g_pids == -1
    for s, sim in similarity_chunks(qf, gf, chunk_size):
        order = np.argsort(-sim, axis=1, kind="stable")  # ties: lower gallery index first
        qp, qc = q_pids[s:s + len(sim), None], q_camids[s:s + len(sim), None]
        gp, gc = g_pids[order], g_camids[order]
        keep = ~(((gp == qp) & (gc == qc)) | g_junk[order])
        match = (gp == qp) & keep
        # drop removed items from the ranking by cumulative positions over kept entries
        rank = np.cumsum(keep, axis=1) - 1
        n_pos = match.sum(1)
        has = n_pos > 0
        valid_q += int(has.sum())
        hits_before = np.cumsum(match, axis=1)
        first = np.where(match, rank, np.iinfo(np.int64).max).min(1)
        cmc_sum += (has[:, None] & (first[:, None] <= np.arange(max_k))).sum(0)
        prec = np.where(match, hits_before / np.maximum(rank + 1.0, 1.0), 0.0)
        ap = prec.sum(1) / np.maximum(n_pos, 1)
        last = np.where(match, rank, -1).max(1)
        ap_sum += ap[has].sum()
        inp_sum += (n_pos[has] / (last[has] + 1.0)).sum()
    if valid_q == 0:
        raise DataError("reid: no query has a valid match in the gallery (check ids and cameras)")
    out = {f"rank{k}": float(cmc_sum[k - 1] / valid_q) for k in topk}
    out.update(mAP=float(ap_sum / valid_q), mINP=float(inp_sum / valid_q),
               num_queries=int(len(qf)), num_valid_queries=valid_q)
    return out
