"""PROTOCOLS registry: how a test set is scored, by the ``protocol`` string of its dataset source.

A protocol names the source splits it embeds, turns their features into its metric's result,
and reads back the cell a paper table shows and the number averaged into the overall score.
Protocols hold no state: the evaluator builds one per test set with ``build_protocol``.
"""
from ..utils.errors import ConfigError
from ..utils.registry import Registry

PROTOCOLS = Registry("test protocol")


def pct(x):
    return f"{100 * x:.2f}"


class Protocol:
    name = ""             # the DatasetSource.protocol string it is registered under
    metric = ""           # METRICS entry used unless a test set names its own
    splits = ("test",)    # source methods whose records are embedded, in this order
    flip = False          # default of a test set's flip_test
    score_key = ""        # result key of the main score and of the headline cell
    no_match = ""         # why a query can have nothing to find (result num_queries_without_match)

    def records(self, source, split):
        return getattr(source, split)()

    def compute(self, metric, source, feats):
        """feats: {split: (features [N, D], ImageDataset of its records)} -> metric result."""
        f, ds = feats[self.splits[0]]
        return metric(f, ds.labels)

    def main_score(self, result):
        """The number a paper table leads with, or None when the result lacks it."""
        return float(result[self.score_key]) if self.score_key in result else None

    def headline(self, result):
        """The paper-table cell in %, "n/a" when the result lacks its numbers."""
        return pct(result[self.score_key]) if self.score_key in result else "n/a"


class _Ranking(Protocol):
    score_key = "rank1"

    def headline(self, result):
        """"rank1/mAP"."""
        if "rank1" in result and "mAP" in result:
            return f"{pct(result['rank1'])}/{pct(result['mAP'])}"
        return "n/a"


@PROTOCOLS.register(name="reid")
class ReIDProtocol(_Ranking):
    """Query against gallery under the Market1501 rule, as far as the source has its parts:
    ``source.has_cameras`` False (a user's list without a camid column) removes no gallery
    item for sharing the query's camera -- every Record's camid 0 would otherwise remove
    every true match -- and ``junk_pid`` / ``distractor_pid`` None make every id a real one."""
    name, metric, splits = "reid", "ReIDMetric", ("query", "gallery")
    no_match = "its id is not in the gallery, only under the query's camera, or a distractor id"

    def compute(self, metric, source, feats):
        (qf, q), (gf, g) = feats["query"], feats["gallery"]
        cams = (q.cameras, g.cameras) if source.has_cameras else (None, None)
        return metric(qf, gf, q.labels, g.labels, *cams, junk_pid=source.junk_pid,
                      distractor_pid=source.distractor_pid)


@PROTOCOLS.register(name="vehicleid")
class VehicleIDProtocol(_Ranking):
    """The metric draws one gallery image per identity from the test split."""
    name, metric = "vehicleid", "VehicleIDMetric"


@PROTOCOLS.register(name="verification")
class VerificationProtocol(Protocol):
    """Image pairs; features are image + flipped image by default (insightface)."""
    name, metric, splits, flip = "verification", "VerificationMetric", ("pairs",), True
    score_key = "accuracy_mean"

    def records(self, source, split):
        return source.pairs()[0]

    def compute(self, metric, source, feats):
        return metric(feats["pairs"][0], source.pairs()[1])


@PROTOCOLS.register(name="recall_at_k")
class RecallAtKProtocol(Protocol):
    """Every test image queries all others (SOP)."""
    name, metric, score_key = "recall_at_k", "RecallAtK", "recall@1"
    no_match = "the only image of its label"


def build_protocol(name, where="protocol"):
    if name not in PROTOCOLS:
        raise ConfigError(f"{where}: unknown test protocol {name!r}; known: "
                          f"{', '.join(PROTOCOLS.names())}")
    return PROTOCOLS.get(name)()
