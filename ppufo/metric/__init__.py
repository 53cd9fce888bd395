"""METRIC registry: one metric per test protocol, on numpy features."""
import numpy as np

from ..utils.registry import Registry
from .recall import evaluate_recall_at_k
from .reid import evaluate_reid
from .verification import evaluate_verification
from .vehicleid import evaluate_vehicleid

METRICS = Registry("metric")


@METRICS.register
class ReIDMetric:
    def __init__(self, topk=(1, 5, 10), chunk_size=256):
        self.topk, self.chunk_size = tuple(topk), chunk_size

    def __call__(self, qf, gf, q_pids, g_pids, q_camids, g_camids):
        return evaluate_reid(qf, gf, q_pids, g_pids, q_camids, g_camids, self.topk, self.chunk_size)


@METRICS.register
class VehicleIDMetric:
    def __init__(self, repeats=10, seed=0, topk=(1, 5), chunk_size=256, ufo_compat=False):
        # the reference draws the gallery once: ufo_compat keeps a single draw
        self.repeats, self.seed, self.topk, self.chunk = (1 if ufo_compat else repeats), seed, tuple(topk), chunk_size

    def __call__(self, features, pids):
        return evaluate_vehicleid(features, np.asarray(pids), self.repeats, self.seed, self.topk, self.chunk)


@METRICS.register
class VerificationMetric:
    def __init__(self, nrof_folds=10):
        self.nrof_folds = nrof_folds

    def __call__(self, embeddings, issame):
        return evaluate_verification(embeddings, issame, self.nrof_folds)


@METRICS.register
class RecallAtK:
    def __init__(self, ks=(1, 10, 100, 1000), chunk_size=256, use_faiss=False, ufo_compat=False):
        self.ks, self.chunk, self.faiss = tuple(ks), chunk_size, use_faiss
        self.exclude = "first_hit" if ufo_compat else "self"

    def __call__(self, features, labels):
        return evaluate_recall_at_k(features, np.asarray(labels), self.ks, self.chunk, self.faiss, self.exclude)


PROTOCOL_METRIC = {"reid": "ReIDMetric", "vehicleid": "VehicleIDMetric",
                   "verification": "VerificationMetric", "recall_at_k": "RecallAtK"}


def main_score(result):
    """The number a paper table leads with: rank-1, verification accuracy, or Recall@1."""
    for key in ("rank1", "accuracy", "recall@1"):
        if key in result:
            return float(result[key])
    return None


def headline(result):
    if "mAP" in result:
        return f"{100 * result['rank1']:.2f}/{100 * result['mAP']:.2f}"
    if "accuracy" in result:
        return f"{100 * result['accuracy']:.2f}±{100 * result['accuracy_std']:.2f}"
    return f"R@1 {100 * result['recall@1']:.2f}"
