"""Recall@K where every item queries all others (SOP protocol); the query itself is excluded
by index, or the first hit is dropped (the UFO reference's choice) with exclude="first_hit"."""
import numpy as np

from ..utils.errors import ConfigError
from .search import topk_search


def evaluate_recall_at_k(features, labels, ks=(1, 10, 100, 1000), chunk_size=256, use_faiss=False,
                         exclude="self"):
    if exclude not in ("self", "first_hit"):
        raise ConfigError(f"RecallAtK.exclude={exclude!r}: expected 'self' or 'first_hit'")
    n = len(features)
    kmax = min(max(ks), n - 1)
    _, idx = topk_search(features, features, kmax + 1, chunk_size, use_faiss)
    if exclude == "self":  # stable sort moves the query itself behind its other hits
        order = np.argsort(idx == np.arange(n)[:, None], axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, 1)[:, :kmax]
    else:
        idx = idx[:, 1:kmax + 1]
    hit = labels[idx] == labels[:, None]
    first = np.where(hit.any(1), hit.argmax(1), kmax + 1)
    return {f"recall@{k}": float(np.mean(first < min(k, kmax))) for k in ks}
