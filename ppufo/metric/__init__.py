"""METRICS registry: one metric per test protocol, on numpy features -> flat dict of floats.

The evaluator uses the metric of the test set's protocol (``PROTOCOLS``, protocol.py) unless
the set names one, and injects the ``Metric`` config section (chunk_size, use_faiss,
ufo_compat, ...) into the metrics that accept those keys. Ranking ties go by lower gallery
index everywhere (search.py).
"""
from ..utils.config import Field, check_args
from ..utils.errors import ConfigError
from ..utils.registry import Registry
from .protocol import PROTOCOLS, Protocol, build_protocol
from .recall import evaluate_recall_at_k
from .reid import evaluate_reid
from .reid_splits import evaluate_reid_splits, identity_splits
from .rerank import average_query_expansion, k_reciprocal_rerank
from .search import topk_search
from .vehicleid import evaluate_vehicleid
from .verification import evaluate_verification

METRICS = Registry("metric")
RANKS = Field((list, tuple), items=Field(int, min=1))  # topk / ks: a non-empty list of positive ints


@METRICS.register
@check_args(topk=RANKS, split_ids=Field((int, type(None)), min=1), split_seed=Field(int, min=0))
class ReIDMetric:
    """Market1501 rule: mAP, mINP, CMC rank-k (see reid.py). query_expansion (AQE) and
    re_ranking (k-reciprocal, memory O(Nq*Ng + N*k1^2)) are applied in that order.

    The call's camids (None: no cameras) and junk_pid / distractor_pid (None: no such id) come
    from the data (ReIDProtocol reads them off the source), not from the config.

    split_ids: score disjoint galleries of that many identities and average them (reid_splits.py):
    a steadier ranking of models than one small gallery, and wider apart than one large one."""

    def __init__(self, topk=(1, 5, 10), chunk_size=256, use_faiss=False, re_ranking=False,
                 query_expansion=False, k1=20, k2=6, lambda_value=0.3, qe_k=5, qe_alpha=3.0, split_ids=None,
                 split_seed=0):
        self.topk = tuple(topk)
        self.split_ids, self.split_seed = split_ids, int(split_seed)
        self.chunk_size, self.use_faiss = int(chunk_size), bool(use_faiss)
        self.re_ranking, self.query_expansion = bool(re_ranking), bool(query_expansion)
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.qe_k, self.qe_alpha = qe_k, qe_alpha

    def __call__(self, qf, gf, q_pids, g_pids, q_camids, g_camids, junk_pid=-1, distractor_pid=0):
        if self.split_ids is not None:  # each split expanded / re-ranked / scored on its own
            return evaluate_reid_splits(qf, gf, q_pids, g_pids, q_camids, g_camids, self.split_ids,
                                        self.split_seed, junk_pid, distractor_pid, evaluate=self.one_gallery)
        return self.one_gallery(qf, gf, q_pids, g_pids, q_camids, g_camids, junk_pid, distractor_pid)

    def one_gallery(self, qf, gf, q_pids, g_pids, q_camids, g_camids, junk_pid=-1, distractor_pid=0):
        if self.query_expansion:
            qf, gf = average_query_expansion(qf, gf, self.qe_k, self.qe_alpha, self.chunk_size)
        scores = None
        if self.re_ranking:
            scores = -k_reciprocal_rerank(qf, gf, self.k1, self.k2, self.lambda_value, self.chunk_size)
        return evaluate_reid(qf, gf, q_pids, g_pids, q_camids, g_camids, self.topk, self.chunk_size,
                             use_faiss=self.use_faiss, scores=scores, junk_pid=junk_pid,
                             distractor_pid=distractor_pid)


@METRICS.register
@check_args(topk=RANKS)
class VehicleIDMetric:
    """One random gallery image per id, seeded repeats; ufo_compat = a single draw."""

    def __init__(self, repeats=10, seed=0, topk=(1, 5), ufo_compat=False, chunk_size=256):
        self.topk = tuple(topk)
        self.repeats, self.seed, self.ufo_compat = repeats, seed, bool(ufo_compat)
        self.chunk_size = int(chunk_size)

    def __call__(self, features, pids):
        return evaluate_vehicleid(features, pids, self.repeats, self.seed, self.topk,
                                  self.chunk_size, self.ufo_compat)


@METRICS.register
class VerificationMetric:
    """insightface 10-fold verification accuracy (squared L2, thresholds 0..4 step 0.01)."""

    def __init__(self, nrof_folds=10):
        self.nrof_folds = nrof_folds

    def __call__(self, embeddings, issame):
        return evaluate_verification(embeddings, issame, self.nrof_folds)


@METRICS.register
@check_args(ks=RANKS)
class RecallAtK:
    """Recall@K, each item querying all others; ufo_compat switches exclude to "first_hit"."""

    def __init__(self, ks=(1, 10, 100, 1000), use_faiss=False, exclude="self", chunk_size=256,
                 ufo_compat=False):
        self.ks = tuple(ks)
        if exclude not in ("self", "first_hit"):
            raise ConfigError(f"RecallAtK.exclude: {exclude!r}; expected 'self' or 'first_hit'")
        self.use_faiss, self.chunk_size = bool(use_faiss), int(chunk_size)
        self.exclude = "first_hit" if ufo_compat else exclude

    def __call__(self, features, labels):
        return evaluate_recall_at_k(features, labels, self.ks, self.chunk_size, self.use_faiss,
                                    self.exclude)


__all__ = ["METRICS", "PROTOCOLS", "Protocol", "ReIDMetric", "VehicleIDMetric",
           "VerificationMetric", "RecallAtK", "average_query_expansion", "build_protocol",
           "evaluate_recall_at_k", "evaluate_reid", "evaluate_reid_splits", "evaluate_vehicleid",
           "evaluate_verification", "identity_splits", "k_reciprocal_rerank", "topk_search"]
