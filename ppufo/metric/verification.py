"""Face verification, insightface protocol: squared L2 on normalised embeddings, thresholds
0..4 step 0.01, 10 folds (threshold best on 9 folds applied to the 10th)."""
import numpy as np

from ..utils.errors import DataError


def kfold_indices(n, k):
    """sklearn KFold(n_splits=k, shuffle=False) test folds."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(k)]


def evaluate_verification(embeddings, issame, nrof_folds=10, thresholds=None):
    issame = np.asarray(issame, dtype=bool)
    if len(embeddings) != 2 * len(issame):
        raise DataError(f"verification: {len(embeddings)} embeddings for {len(issame)} pairs (need 2 per pair)")
    thresholds = np.arange(0, 4, 0.01) if thresholds is None else thresholds
    dist = ((embeddings[0::2] - embeddings[1::2]) ** 2).sum(1)
    pred = dist[None, :] < thresholds[:, None]            # [T, P]
    correct = pred == issame[None, :]
    accs, best = [], []
    for test in kfold_indices(len(issame), nrof_folds):
        train = np.setdiff1d(np.arange(len(issame)), test)
        t = int(np.argmax(correct[:, train].mean(1)))    # first best, as insightface
        best.append(thresholds[t])
        accs.append(correct[t, test].mean())
    return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "threshold": float(np.mean(best)), "num_pairs": int(len(issame))}
