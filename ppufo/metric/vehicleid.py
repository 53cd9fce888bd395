"""VehicleID: one random image per identity is the gallery, the rest query; 10 seeded repeats."""
import numpy as np

from .reid import evaluate_reid


def evaluate_vehicleid(features, pids, repeats=10, seed=0, topk=(1, 5), chunk_size=256):
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(repeats):
        order = rng.permutation(len(pids))
        _, first = np.unique(pids[order], return_index=True)
        gallery = np.zeros(len(pids), bool)
        gallery[order[first]] = True
        q, g = ~gallery, gallery
        # distinct fake cameras: no same-camera filtering in this protocol
        runs.append(evaluate_reid(features[q], features[g], pids[q], pids[g],
                                  np.zeros(q.sum(), np.int64), np.ones(g.sum(), np.int64), topk, chunk_size))
    keys = [f"rank{k}" for k in topk] + ["mAP"]
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    out.update({f"{k}_std": float(np.std([r[k] for r in runs])) for k in keys})
    out["repeats"] = repeats
    return out
