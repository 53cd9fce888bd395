"""Test protocols: the splits each embeds, how it calls its metric, its headline cell and score."""
from types import SimpleNamespace

import numpy as np
import pytest

from ppufo.data.datasets import DATASETS
from ppufo.metric import METRICS, PROTOCOLS, build_protocol
from ppufo.utils.errors import ConfigError


class Source:
    """The split methods of a DatasetSource, returning their own names as records, and how its
    ids read (Market1501's: cameras, junk -1, distractor 0)."""
    has_cameras, junk_pid, distractor_pid = True, -1, 0

    def query(self):
        return "query records"

    def gallery(self):
        return "gallery records"

    def test(self):
        return "test records"

    def pairs(self):
        return "pair records", np.array([True, False])


def embedded(*splits):
    return {s: (f"{s} features", SimpleNamespace(labels=f"{s} labels", cameras=f"{s} cameras"))
            for s in splits}


def recorder(*args, **kwargs):
    return {"called with": args, "keywords": kwargs}


def test_registry_covers_every_dataset_protocol_with_a_known_metric():
    assert PROTOCOLS.names() == ["recall_at_k", "reid", "vehicleid", "verification"]
    used = {DATASETS.get(n).protocol for n in DATASETS.names()} - {None}
    assert used == set(PROTOCOLS.names())
    for name in PROTOCOLS.names():
        p = build_protocol(name)
        assert p.name == name and p.metric in METRICS
    with pytest.raises(ConfigError, match=r"Tasks.x.test_sets.0: unknown test protocol 'nope'; "
                                          r"known: recall_at_k, reid, vehicleid, verification"):
        build_protocol("nope", "Tasks.x.test_sets.0")


@pytest.mark.parametrize("name, splits, records, call, flip", [
    ("reid", ("query", "gallery"), ["query records", "gallery records"],
     ("query features", "gallery features", "query labels", "gallery labels", "query cameras",
      "gallery cameras"), False),
    ("vehicleid", ("test",), ["test records"], ("test features", "test labels"), False),
    ("recall_at_k", ("test",), ["test records"], ("test features", "test labels"), False),
    ("verification", ("pairs",), ["pair records"], ("pairs features", [True, False]), True),
])
def test_splits_records_and_metric_call(name, splits, records, call, flip):
    p, src = build_protocol(name), Source()
    assert p.splits == splits and p.flip is flip
    assert [p.records(src, s) for s in p.splits] == records
    res = p.compute(recorder, src, embedded(*splits))
    assert [np.asarray(a).tolist() if isinstance(a, np.ndarray) else a for a in res["called with"]] == list(call)
    assert res["keywords"] == ({"junk_pid": -1, "distractor_pid": 0} if name == "reid" else {})


def test_reid_reads_cameras_and_special_ids_off_the_source():
    """A source without cameras (a user's list) gets no camera ids, so the metric removes no
    gallery item for sharing the query's camera; None ids make every id a real one."""
    src = Source()
    src.has_cameras, src.junk_pid, src.distractor_pid = False, None, None
    res = build_protocol("reid").compute(recorder, src, embedded("query", "gallery"))
    assert res["called with"] == ("query features", "gallery features", "query labels", "gallery labels",
                                  None, None)
    assert res["keywords"] == {"junk_pid": None, "distractor_pid": None}


@pytest.mark.parametrize("name, result, cell, score", [
    ("reid", {"rank1": 0.875, "mAP": 0.84, "mINP": 0.5}, "87.50/84.00", 0.875),
    ("vehicleid", {"rank1": 0.5, "rank5": 0.9, "mAP": 0.61234, "rank1_std": 0.1}, "50.00/61.23", 0.5),
    ("verification", {"accuracy_mean": 0.81428, "accuracy_std": 0.02}, "81.43", 0.81428),
    ("recall_at_k", {"recall@1": 0.98333, "recall@10": 1.0}, "98.33", 0.98333),
    # a metric configured without its headline numbers (e.g. ReIDMetric topk=[5])
    ("reid", {"rank5": 0.9, "mAP": 0.8}, "n/a", None),
    ("reid", {"rank1": 0.9}, "n/a", 0.9),
    ("verification", {"num_pairs": 3}, "n/a", None),
    ("recall_at_k", {"recall@10": 0.5}, "n/a", None),
])
def test_headline_and_main_score(name, result, cell, score):
    p = build_protocol(name)
    assert p.headline(result) == cell and p.main_score(result) == score
    assert score is None or isinstance(p.main_score(result), float)


def test_real_metrics_through_their_protocols():
    f = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    ds = SimpleNamespace(labels=np.array([0, 0, 1, 1, 2, 2]), cameras=np.zeros(6, np.int64))
    rec = build_protocol("recall_at_k")
    res = rec.compute(METRICS.build({"name": "RecallAtK", "ks": [1]}), Source(), {"test": (f, ds)})
    assert rec.headline(res) == "100.00" and rec.main_score(res) == 1.0
    reid = build_protocol("reid")
    q = SimpleNamespace(labels=np.array([0, 1]), cameras=np.array([0, 0]))
    g = SimpleNamespace(labels=np.array([1, 0]), cameras=np.array([1, 1]))
    res = reid.compute(METRICS.build({"name": "ReIDMetric", "topk": [1]}), Source(),
                       {"query": (f[[0, 2]], q), "gallery": (f[[2, 0]], g)})
    assert reid.headline(res) == "100.00/100.00" and reid.main_score(res) == 1.0


def test_evaluator_gives_each_test_set_its_protocol(make_config):
    from ppufo.engine.evaluator import Evaluator
    ev = Evaluator(make_config(), model=None, only=["lfw", "Market1501", "VeRi776", "SOP"])
    got = [(s.label, s.protocol.name, type(s.metric).__name__, s.flip) for s in ev.sets]
    assert got == [("lfw", "verification", "VerificationMetric", True),
                   ("Market1501", "reid", "ReIDMetric", False),
                   ("VeRi776", "reid", "ReIDMetric", False),
                   ("SOP", "recall_at_k", "RecallAtK", False)]


def test_id_0_is_a_distractor_only_in_market1501_style_folders():
    # MSMT17's first test identity is 0: the UFO reference's metric scores its queries like any
    # other; only Market1501 / DukeMTMC mark gallery distractors with 0
    assert (DATASETS.get("Market1501").distractor_pid, DATASETS.get("DukeMTMC").distractor_pid) == (0, 0)
    for name in ("MSMT17", "VeRi776", "VeRiWild", "ImageList", "ImageFolder"):
        assert DATASETS.get(name).distractor_pid is None, name
    f = np.eye(2, dtype=np.float32)
    q = SimpleNamespace(labels=np.array([0, 1]), cameras=np.array([0, 0]))
    g = SimpleNamespace(labels=np.array([1, 0]), cameras=np.array([1, 1]))
    msmt = SimpleNamespace(has_cameras=True, junk_pid=-1, distractor_pid=DATASETS.get("MSMT17").distractor_pid)
    metric = METRICS.build({"name": "ReIDMetric", "topk": [1]})
    res = build_protocol("reid").compute(metric, msmt, {"query": (f, q), "gallery": (f[[1, 0]], g)})
    assert res["num_valid_queries"] == 2 and res["rank1"] == 1.0
    res = build_protocol("reid").compute(metric, Source(), {"query": (f, q), "gallery": (f[[1, 0]], g)})
    assert res["num_valid_queries"] == 1  # Market1501's rule: the id-0 query has no valid match
