"""Face verification, insightface protocol (``verification.py``: calculate_roc / calculate_accuracy).

embeddings [2P, D]: pairs are rows (0, 1), (2, 3), ... (the caller sums image + flip features
and L2-normalises). distance = squared L2 (0..4); a pair is predicted "same" when
distance < threshold. 10 folds as sklearn KFold(n_splits=10, shuffle=False); per fold the
threshold with the best accuracy on the other folds (first, i.e. lowest, of equal bests, like
np.argmax) is applied to the held-out fold. Accuracy mean and std (ddof 0) over folds.

The sweep is vectorised: with the training distances sorted, the number of pairs below every
threshold comes from one searchsorted, so the cost is O(P log P + T log P) per fold.
"""
import numpy as np

from ..utils.errors import ConfigError, DataError


def kfold_indices(n, k):
    """Test folds of sklearn KFold(n_splits=k, shuffle=False): the first n % k folds get one
    extra item."""
    if not 2 <= k <= n:
        raise ConfigError(f"verification: nrof_folds={k} must be in [2, number of pairs={n}]")
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(k)]


def _correct_counts(dist, same, thresholds):
    """Correct predictions of every threshold: #(same & d < t) + #(diff & d >= t)."""
    d_same = np.sort(dist[same])
    d_diff = np.sort(dist[~same])
    tp = np.searchsorted(d_same, thresholds, "left")                 # d < t
    tn = len(d_diff) - np.searchsorted(d_diff, thresholds, "left")   # d >= t
    return tp + tn


def pair_distances(embeddings):
    """Squared L2 of consecutive rows, computed as insightface does (same float rounding)."""
    diff = np.subtract(embeddings[0::2], embeddings[1::2])
    return np.sum(np.square(diff), 1)


def evaluate_verification(embeddings, issame, nrof_folds=10, thresholds=None):
    """-> dict(accuracy_mean, accuracy_std, best_threshold_mean, best_threshold_std, num_pairs)."""
    where = "evaluate_verification"
    emb = np.asarray(embeddings)
    issame = np.asarray(issame)
    if emb.ndim != 2:
        raise DataError(f"{where}: embeddings must be 2-D [2 * pairs, D], got shape {emb.shape}")
    if issame.ndim != 1 or issame.dtype.kind not in "bi":
        raise DataError(f"{where}: issame must be a 1-D bool array, got shape {issame.shape} "
                        f"dtype {issame.dtype}")
    if len(emb) != 2 * len(issame):
        raise DataError(f"{where}: {len(emb)} embeddings for {len(issame)} pairs "
                        f"(need 2 per pair, i.e. {2 * len(issame)})")
    if not np.isfinite(emb).all():
        raise DataError(f"{where}: embeddings contain NaN or inf")
    issame = issame.astype(bool)
    thresholds = np.arange(0, 4, 0.01) if thresholds is None else np.asarray(thresholds, np.float64)
    if thresholds.ndim != 1 or len(thresholds) == 0 or np.any(np.diff(thresholds) < 0):
        raise ConfigError(f"{where}: thresholds must be a non-empty ascending 1-D array")
    # float64 holds every float32 distance exactly, so comparisons equal np.less(dist32, t)
    dist = pair_distances(emb).astype(np.float64)
    n = len(issame)
    accs, best = [], []
    for test in kfold_indices(n, nrof_folds):
        train = np.ones(n, bool)
        train[test] = False
        correct = _correct_counts(dist[train], issame[train], thresholds)
        t = thresholds[int(np.argmax(correct))]   # first of equal bests
        accs.append(np.mean((dist[test] < t) == issame[test]))
        best.append(t)
    return {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "best_threshold_mean": float(np.mean(best)), "best_threshold_std": float(np.std(best)),
            "num_pairs": int(n)}
