"""A user's own test data: ImageList query/gallery (reid) and test (recall_at_k) lists,
ImageFolder query/ gallery/ and test/ folders, and the protocol each gets, on hand-made files
whose ids, cameras and scores are known exactly."""
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from ppufo.data.datasets import DATASETS, ImageDataset
from ppufo.engine.evaluator import configured_labels
from ppufo.metric import METRICS, build_protocol
from ppufo.utils.errors import ConfigError, DataError


def build(name, root, **kw):
    return DATASETS.build({"name": name, "root": str(root), **kw})


def jpg(path, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path)


def write(root, name, rows):
    """A list file ``name`` under ``root`` with ``rows``, and an image for each row's path."""
    for r in rows:
        jpg(os.path.join(root, r.split()[0]))
    with open(os.path.join(root, name), "w") as f:
        f.write("".join(r + "\n" for r in rows))


def esc(path):
    return re.escape(str(path))


def rel(root, records):
    return [(os.path.relpath(r.key, root), r.pid, r.camid) for r in records]


@pytest.fixture
def warnings():
    """Messages of the warnings the ppufo logger emits during the test."""
    got = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                got.append(record.getMessage())
    handler = Keep()
    logging.getLogger("ppufo").addHandler(handler)
    yield got
    logging.getLogger("ppufo").removeHandler(handler)


# ----------------------------------------------------------------------------- reid through the protocol

# two queries, qa (id 1) and qb (id 0: a real id, not Market1501's distractor), scored against
# five gallery images by the 2-d features below: qa = [1, 0] scores a gallery item by its first
# value, qb = [0, 1] by its second. g1 (id 2) is a distractor (in the gallery only).
#        id  cam  feature
#  g0    1   0    [0.9, 0.1]
#  g1    2   1    [0.8, 0.3]
#  g2    1   1    [0.7, 0.2]
#  g3    0   1    [0.1, 0.5]
#  g4    0   0    [0.0, 0.9]
# with cameras (both queries under camera 0): g0 is removed for qa, g4 for qb
#   qa: g1 x, g2 HIT (rank 2), AP 1/2;  qb: g3 HIT (rank 1), AP 1  -> rank1 1/2, rank2 1, mAP 3/4
# without cameras nothing is removed
#   qa: g0 HIT, g1 x, g2 HIT, AP (1 + 2/3) / 2 = 5/6;  qb: g4 HIT, g3 HIT, AP 1
#   -> rank1 1, mAP 11/12
# (camera rule on camid 0 everywhere would leave no valid query; id 0 as a distractor would
# skip qb: rank1 0 / 1/2, mAP 1/2 / 5/6)
QF = np.array([[1, 0], [0, 1]], np.float32)
GF = np.array([[0.9, 0.1], [0.8, 0.3], [0.7, 0.2], [0.1, 0.5], [0.0, 0.9]], np.float32)
GALLERY = [("g0", 1, 0), ("g1", 2, 1), ("g2", 1, 1), ("g3", 0, 1), ("g4", 0, 0)]


def reid_lists(root, cameras, extra_query=()):
    cam = (lambda c: f" {c}") if cameras else (lambda c: "")
    write(root, "query.txt", [f"q/qa.jpg 1{cam(0)}", f"q/qb.jpg 0{cam(0)}", *extra_query])
    write(root, "gallery.txt", [f"g/{n}.jpg {pid}{cam(c)}" for n, pid, c in GALLERY])


def score(src, qf=QF):
    feats = {s: (f, ImageDataset([(src, getattr(src, s)())], relabel=False))
             for s, f in (("query", qf), ("gallery", GF))}
    return build_protocol("reid").compute(METRICS.build({"name": "ReIDMetric", "topk": [1, 2]}), src, feats)


def test_list_reid_with_cameras_applies_the_camera_rule(tmp_path):
    reid_lists(tmp_path, cameras=True)
    src = build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt")
    assert src.protocol == "reid" and src.splits == ("query", "gallery") and src.has_cameras
    assert rel(tmp_path, src.query()) == [("q/qa.jpg", 1, 0), ("q/qb.jpg", 0, 0)]
    assert rel(tmp_path, src.gallery()) == [(f"g/{n}.jpg", p, c) for n, p, c in GALLERY]
    r = score(src)
    assert (r["rank1"], r["rank2"]) == (0.5, 1.0) and r["mAP"] == pytest.approx(0.75, abs=1e-12)
    assert (r["num_queries"], r["num_valid_queries"], r["num_queries_without_match"]) == (2, 2, 0)


def test_list_reid_without_cameras_removes_nothing(tmp_path):
    reid_lists(tmp_path, cameras=False)
    src = build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt", protocol="reid")
    assert src.protocol == "reid" and not src.has_cameras
    assert {r.camid for r in src.query() + src.gallery()} == {0}
    r = score(src)
    assert (r["rank1"], r["rank2"]) == (1.0, 1.0) and r["mAP"] == pytest.approx(11 / 12, abs=1e-12)
    assert src.summary() == {"query": {"images": 2, "ids": 2, "cameras": 1},
                             "gallery": {"images": 5, "ids": 3, "cameras": 1}}


def test_query_id_absent_from_the_gallery_is_counted_and_logged(tmp_path, warnings):
    reid_lists(tmp_path, cameras=False, extra_query=["q/qc.jpg 7"])
    src = build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt")
    assert len(src.query()) == 3 and src.without_match == {"query": 1}
    assert any("1 of 3 queries of" in w and "query.txt have no match in" in w and "[7]" in w
               for w in warnings), warnings
    r = score(src, np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32))
    # qc scores nothing: the two others give the numbers of the camera-less case
    assert (r["num_queries"], r["num_valid_queries"], r["num_queries_without_match"]) == (3, 2, 1)
    assert r["rank1"] == 1.0 and r["mAP"] == pytest.approx(11 / 12, abs=1e-12)


def test_same_camera_only_query_counts_as_without_match(tmp_path):
    reid_lists(tmp_path, cameras=True, extra_query=["q/qd.jpg 2 1"])  # id 2 only under camera 1
    src = build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt")
    assert src.without_match == {} and len(src.query()) == 3 and src.without_match == {"query": 1}


def test_no_query_id_in_the_gallery_is_an_error_naming_both_lists(tmp_path):
    write(tmp_path, "query.txt", ["q/a.jpg 5", "q/b.jpg 6"])
    write(tmp_path, "gallery.txt", ["g/a.jpg 1", "g/b.jpg 2"])
    src = build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt")
    with pytest.raises(DataError, match=rf"no query of {esc(tmp_path / 'query.txt')} has a match in "
                                        rf"{esc(tmp_path / 'gallery.txt')} \(an image of its id\); "
                                        r"query ids \[5, 6\], gallery ids \[1, 2\]"):
        src.query()
    # the ids exist, but only under the query's own camera
    write(tmp_path, "query.txt", ["q/a.jpg 1 0"])
    write(tmp_path, "gallery.txt", ["g/a.jpg 1 0", "g/b.jpg 2 1"])
    with pytest.raises(DataError, match=r"\(an image of its id under another camera\)"):
        build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt").query()


# ----------------------------------------------------------------------------- test list (recall_at_k)

def test_test_list_is_all_against_all_and_counts_singletons(tmp_path, warnings):
    write(tmp_path, "test.txt", ["a/1.jpg 3", "a/2.jpg 3", "b/1.jpg 4", "b/2.jpg 4", "c/1.jpg 9"])
    src = build("ImageList", tmp_path, test_list="test.txt")
    assert src.protocol == "recall_at_k" and src.splits == ("test",)
    assert [(p, c) for _, p, c in rel(tmp_path, src.test())] == [(3, 0), (3, 0), (4, 0), (4, 0), (9, 0)]
    assert src.without_match == {"test": 1}
    assert any("1 of 5 images of" in w and "test.txt are the only image of their label ([9])" in w
               for w in warnings), warnings
    # a/1 = a/2 = [1, 0], b/1 = [0, 1], b/2 = [0.6, 0.8], c/1 (label 9, alone) = [0.8, 0.6]
    #   a/1, a/2: the other a (score 1) first -> rank 1; b/1: b/2 (0.8) first -> rank 1
    #   b/2: c/1 (0.96) before b/1 (0.8) -> rank 2; c/1 has nothing to find: left out
    #   R@1 = 3/4, R@2 = 1 (with c/1 in the denominator: 3/5, 4/5)
    f = np.array([[1, 0], [1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], np.float32)
    ds = ImageDataset([(src, src.test())], relabel=False)
    r = build_protocol("recall_at_k").compute(METRICS.build({"name": "RecallAtK", "ks": [1, 2]}), src,
                                              {"test": (f, ds)})
    assert r == {"recall@1": 0.75, "recall@2": 1.0, "num_queries": 5, "num_queries_without_match": 1}


def test_test_list_of_singletons_only_is_an_error(tmp_path):
    write(tmp_path, "test.txt", ["a/1.jpg 3", "b/1.jpg 4"])
    with pytest.raises(DataError, match=rf"every label of {esc(tmp_path / 'test.txt')} has a single image "
                                        r"\(2 images\)"):
        build("ImageList", tmp_path, test_list="test.txt").test()


# ----------------------------------------------------------------------------- bad lines, protocol

@pytest.mark.parametrize("rows, n, error", [
    (["a/1.jpg 1 0", "a/2.jpg 1"], 2,
     "2 fields, but line 1 has 3; the camid column must be on every line or on none"),
    (["a/1.jpg 1", "a/2.jpg 1 0"], 2, "3 fields, but line 1 has 2"),
    (["a/1.jpg 1", "a/2.jpg one"], 2, "label must be an integer, got 'one'"),
    (["a/1.jpg 1 c1", "a/2.jpg 1 0"], 1, "camid must be an integer, got 'c1'"),
    (["a/1.jpg 1", "a/2.jpg 1 0 5"], 2, r"expected 2 or 3 fields \(path label \[camid\]\), got 4"),
])
def test_bad_lines_are_named_with_file_and_line(tmp_path, rows, n, error):
    write(tmp_path, "test.txt", rows)
    with pytest.raises(DataError, match=rf"{esc(tmp_path / 'test.txt')}:{n}: {error}"):
        build("ImageList", tmp_path, test_list="test.txt").test()


def test_missing_image_and_camera_column_in_one_list_only(tmp_path):
    write(tmp_path, "query.txt", ["q/a.jpg 1"])
    write(tmp_path, "gallery.txt", ["g/a.jpg 1 0", "g/b.jpg 2 1"])
    with pytest.raises(DataError, match=rf"{esc(tmp_path / 'gallery.txt')} has the camid column but "
                                        rf"{esc(tmp_path / 'query.txt')} has not"):
        build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt").query()
    os.remove(tmp_path / "g" / "b.jpg")
    with pytest.raises(DataError, match=rf"{esc(tmp_path / 'gallery.txt')}:2: listed image not found: "
                                        rf"{esc(tmp_path / 'g' / 'b.jpg')}"):
        build("ImageList", tmp_path, query_list="query.txt", gallery_list="gallery.txt").gallery()


@pytest.mark.parametrize("keys, protocol", [
    ({"list_file": "train.txt"}, None),
    ({"query_list": "q.txt", "gallery_list": "g.txt"}, "reid"),
    ({"query_list": "q.txt", "gallery_list": "g.txt", "protocol": "reid"}, "reid"),
    ({"test_list": "t.txt"}, "recall_at_k"),
    ({"list_file": "train.txt", "test_list": "t.txt"}, "recall_at_k"),
    ({"query_list": "q.txt", "gallery_list": "g.txt", "test_list": "t.txt", "protocol": "recall_at_k"},
     "recall_at_k"),
])
def test_protocol_is_inferred_or_taken_as_given(tmp_path, keys, protocol):
    for name in ("train.txt", "q.txt", "g.txt", "t.txt"):
        write(tmp_path, name, ["a/1.jpg 1", "a/2.jpg 1"])
    src = build("ImageList", tmp_path, **keys)
    assert src.protocol == protocol and DATASETS.get("ImageList").protocol_of(keys) == protocol
    assert set(src.splits) == {s for s, k in src.KEYS.items() if k in keys}
    assert DATASETS.get("ImageList").protocol is None  # the class keeps no instance's protocol


@pytest.mark.parametrize("keys, error", [
    ({}, "no list given; expected list_file \\(train\\), query_list \\+ gallery_list"),
    ({"query_list": "q.txt"}, "query_list and gallery_list go together \\(protocol reid\\); got only query_list"),
    ({"gallery_list": "g.txt", "test_list": "t.txt"},
     "query_list and gallery_list go together \\(protocol reid\\); got only gallery_list"),
    ({"protocol": "reid", "test_list": "t.txt"}, "protocol reid reads query_list and gallery_list; not given"),
    ({"protocol": "recall_at_k", "list_file": "train.txt"}, "protocol recall_at_k reads test_list; not given"),
    ({"query_list": "q.txt", "gallery_list": "g.txt", "test_list": "t.txt"},
     "both query_list/gallery_list and test_list given; set protocol: reid or protocol: recall_at_k"),
    ({"protocol": "rank", "test_list": "t.txt"},
     "protocol 'rank'; expected reid, recall_at_k or none \\(inferred from the lists\\)"),
])
def test_protocol_mismatch_is_a_config_error(tmp_path, keys, error):
    for name in ("train.txt", "q.txt", "g.txt", "t.txt"):
        write(tmp_path, name, ["a/1.jpg 1", "a/2.jpg 1"])
    with pytest.raises(ConfigError, match=f"ImageList: {error}"):
        build("ImageList", tmp_path, **keys)
    with pytest.raises(ConfigError, match=f"ImageList: {error}"):
        DATASETS.get("ImageList").protocol_of(keys)


# ----------------------------------------------------------------------------- folders

def folders(root, layout):
    """layout: {relative folder: number of images}."""
    for d, n in layout.items():
        for i in range(n):
            jpg(os.path.join(root, d, f"{i}.jpg"))


def test_folder_reid_shares_ids_and_applies_no_camera_rule(tmp_path, warnings):
    folders(tmp_path, {"query/bob": 1, "query/ann": 1, "query/zed": 1,
                       "gallery/ann": 2, "gallery/bob": 1, "gallery/cy": 1})
    (tmp_path / "gallery" / "cy" / "Thumbs.db").write_text("x")
    os.makedirs(tmp_path / "gallery" / "empty")
    src = build("ImageFolder", tmp_path, protocol="reid")
    assert src.protocol == "reid" and src.splits == ("query", "gallery") and not src.has_cameras
    # one sorted mapping over both splits: ann 0, bob 1, cy 2, empty 3, zed 4
    assert rel(tmp_path, src.query()) == [("query/ann/0.jpg", 0, 0), ("query/bob/0.jpg", 1, 0),
                                          ("query/zed/0.jpg", 4, 0)]
    assert rel(tmp_path, src.gallery()) == [("gallery/ann/0.jpg", 0, 0), ("gallery/ann/1.jpg", 0, 0),
                                            ("gallery/bob/0.jpg", 1, 0), ("gallery/cy/0.jpg", 2, 0)]
    assert src.skip_reasons == {"gallery": {"non-image files": 1, "empty identity folders": 1}}
    assert src.without_match == {"query": 1} and any("1 of 3 queries" in w for w in warnings)
    # through the protocol: ann (id 0, a real id) finds both its images first, bob his one at
    # rank 2 (behind cy, a distractor); zed is counted, not scored
    qf = np.array([[1, 0], [0, 1], [0.7, 0.7]], np.float32)
    gf = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.5], [0.2, 0.9]], np.float32)
    feats = {s: (f, ImageDataset([(src, getattr(src, s)())], relabel=False))
             for s, f in (("query", qf), ("gallery", gf))}
    r = build_protocol("reid").compute(METRICS.build({"name": "ReIDMetric", "topk": [1, 2]}), src, feats)
    assert (r["rank1"], r["rank2"], r["mAP"]) == (0.5, 1.0, 0.75)
    assert (r["num_queries"], r["num_queries_without_match"]) == (3, 1)


def test_folder_numeric_ids_keep_their_number(tmp_path):
    folders(tmp_path, {"query/7": 1, "query/12": 1, "gallery/12": 1, "gallery/7": 2, "gallery/300": 1})
    src = build("ImageFolder", tmp_path, protocol="reid")
    assert [r.pid for r in src.query()] == [12, 7] and [r.pid for r in src.gallery()] == [12, 300, 7, 7]
    folders(tmp_path / "b", {"query/7": 1, "gallery/007": 1})
    with pytest.raises(DataError, match="identity folders '007' and '7' are the same number"):
        build("ImageFolder", tmp_path / "b", protocol="reid").query()


def test_folder_test_split_and_custom_names(tmp_path):
    folders(tmp_path, {"eval/cat": 2, "eval/dog": 3, "eval/emu": 1})
    src = build("ImageFolder", tmp_path, protocol="recall_at_k", test_dir="eval")
    assert src.protocol == "recall_at_k" and src.splits == ("test",)
    assert [r.pid for r in src.test()] == [0, 0, 1, 1, 1, 2] and src.without_match == {"test": 1}
    with pytest.raises(DataError, match=rf"ImageFolder protocol recall_at_k: test folder not found: "
                                        rf"{esc(tmp_path / 'test')}; expected <root>/test/<identity>/<image>"):
        build("ImageFolder", tmp_path, protocol="recall_at_k").test()
    folders(tmp_path / "s", {"test/a": 1, "test/b": 1})
    with pytest.raises(DataError, match=r"every label of .*test has a single image \(2 images\)"):
        build("ImageFolder", tmp_path / "s", protocol="recall_at_k").test()


def test_folder_no_query_in_the_gallery_and_missing_split(tmp_path):
    folders(tmp_path, {"query/a": 1, "gallery/b": 1})
    with pytest.raises(DataError, match=rf"no query of {esc(tmp_path / 'query')} has a match in "
                                        rf"{esc(tmp_path / 'gallery')}"):
        build("ImageFolder", tmp_path, protocol="reid").query()
    folders(tmp_path / "x", {"query/a": 1})
    with pytest.raises(DataError, match=r"gallery folder not found: .*x/gallery; expected <root>/gallery/"):
        build("ImageFolder", tmp_path / "x", protocol="reid").query()


def test_train_folder_holding_split_folders_points_to_the_fix(tmp_path):
    folders(tmp_path, {"train/a": 1, "query/a": 1, "gallery/a": 1})
    with pytest.raises(DataError, match=rf"holds split folders \['gallery', 'query', 'train'\], not identity "
                                        rf"folders; to train set root: {esc(tmp_path / 'train')}, to test set "
                                        r"protocol: reid"):
        build("ImageFolder", tmp_path).train()
    assert [r.pid for r in build("ImageFolder", tmp_path / "train").train()] == [0]
    with pytest.raises(DataError, match="has no 'query' split"):
        build("ImageFolder", tmp_path / "train").query()
    with pytest.raises(ConfigError, match=r"ImageFolder: protocol 'test'; expected reid, recall_at_k or "
                                          r"none \(training data\)"):
        build("ImageFolder", tmp_path, protocol="test")


# ----------------------------------------------------------------------------- the evaluator's view

def test_configured_labels_read_the_protocol_off_the_entry(tmp_path):
    config = {"Tasks": {"p": {"test_sets": [
        {"name": "ImageList", "root": "nowhere", "query_list": "q.txt", "gallery_list": "g.txt"},
        {"name": "ImageList", "root": "nowhere", "test_list": "t.txt", "alias": "mine-sop"},
        {"name": "ImageFolder", "root": "nowhere", "protocol": "reid", "alias": "folder-reid"},
        {"name": "ImageFolder", "root": "nowhere", "protocol": "recall_at_k", "alias": "folder-sop"},
        {"name": "ImageFolder", "root": "nowhere", "alias": "folder-train"},
        {"name": "Market1501", "root": "nowhere"}]}}}
    assert configured_labels(config) == {"ImageList": "reid", "mine-sop": "recall_at_k",
                                         "folder-reid": "reid", "folder-sop": "recall_at_k",
                                         "folder-train": None, "Market1501": "reid"}
    config["Tasks"]["p"]["test_sets"].append({"name": "ImageList", "root": "x", "protocol": "reid",
                                              "test_list": "t.txt", "alias": "bad"})
    with pytest.raises(ConfigError, match=r"Tasks.p.test_sets.6: ImageList: protocol reid reads "
                                          r"query_list and gallery_list; not given"):
        configured_labels(config)
