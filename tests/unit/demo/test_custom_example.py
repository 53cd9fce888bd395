"""The custom_example demo set (a logo set in the list and folder layouts of one's own data): what it
writes, read back by ppufo's readers, its size knobs and determinism, and how it is added to a demo
root (the CLI's --sets, Global.demo_sets) without touching the sets already there."""
import os

import pytest

from helpers import tree_digest as digest
from ppufo import demo
from ppufo.data.datasets import DATASETS
from ppufo.demo import ensure_demo_data
from ppufo.demo.custom import FIRST_ID
from ppufo.utils.errors import ConfigError, DataError

SMALL = dict(num_train_ids=5, num_test_ids=4, imgs_per_id=4, queries_per_id=2, num_gallery_only_ids=2, num_cams=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    info = demo.write_all(str(root), seed=1, sets=["custom_example"], sizes={"custom_example": SMALL})
    return str(root / "custom_example"), info["custom_example"]["info"]


def lines(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def build(root, **kw):
    return DATASETS.build({"root": root, **kw})


def test_both_layouts_hold_the_same_images_and_counts(small):
    root, info = small
    # gallery: 4 test ids x (4 - 2 queries) + 2 distractors x 4; test: query + gallery
    assert info["images"] == {"train": 20, "query": 8, "gallery": 16, "test": 24}
    assert sorted(os.listdir(root)) == ["folder", "list"]
    assert sorted(os.listdir(os.path.join(root, "list"))) == ["gallery.txt", "images", "query.txt", "test.txt",
                                                               "train.txt"]
    assert sorted(os.listdir(os.path.join(root, "folder"))) == ["gallery", "query", "test", "train"]
    for split, n in (("train", 20), ("query", 8), ("gallery", 16), ("test", 24)):
        rows = lines(os.path.join(root, "list", f"{split}.txt"))
        assert len(rows) == n and {len(r) for r in rows} == {2 if split == "test" else 3}
        folder = os.path.join(root, "folder", split)
        files = {f"{d}/{f}" for d in os.listdir(folder) for f in os.listdir(os.path.join(folder, d))}
        # the folder layout: <label>/<the list's file name>, same bytes
        assert files == {f"{int(r[1]):04d}/{os.path.basename(r[0])}" for r in rows}
        for r in rows[:3]:
            with open(os.path.join(root, "list", r[0]), "rb") as a, \
                    open(os.path.join(folder, f"{int(r[1]):04d}", os.path.basename(r[0])), "rb") as b:
                assert a.read() == b.read()


def test_the_readers_parse_every_list_and_folder(small):
    root, _ = small
    lst = os.path.join(root, "list")
    train = build(lst, name="ImageList", list_file="train.txt").train()
    assert len(train) == 20 and {r.pid for r in train} == set(range(FIRST_ID["train"], FIRST_ID["train"] + 5))
    assert {r.camid for r in train} <= {1, 2, 3}
    reid = build(lst, name="ImageList", query_list="query.txt", gallery_list="gallery.txt")
    assert reid.protocol == "reid" and reid.has_cameras
    q, g = reid.query(), reid.gallery()
    assert reid.without_match["query"] == 0  # every query has its id under another camera in the gallery
    test_ids = set(range(FIRST_ID["test"], FIRST_ID["test"] + 4))
    distractors = set(range(FIRST_ID["distractor"], FIRST_ID["distractor"] + 2))
    assert {r.pid for r in q} == test_ids and {r.pid for r in g} == test_ids | distractors
    assert not ({r.pid for r in train} & ({r.pid for r in g}))
    for pid in test_ids:  # the queries of an id are on distinct cameras
        cams = [r.camid for r in q if r.pid == pid]
        assert len(cams) == 2 and len(set(cams)) == 2
    test = build(lst, name="ImageList", test_list="test.txt")
    assert test.protocol == "recall_at_k" and len(test.test()) == 24 and test.without_match["test"] == 0
    folder = os.path.join(root, "folder")
    f_reid = build(folder, name="ImageFolder", protocol="reid")
    key = lambda recs: sorted((os.path.basename(r.key), r.pid) for r in recs)  # noqa: E731
    assert key(f_reid.query()) == key(q) and key(f_reid.gallery()) == key(g)
    assert key(build(folder, name="ImageFolder", protocol="recall_at_k").test()) == key(test.test())
    f_train = build(os.path.join(folder, "train"), name="ImageFolder").train()
    assert len(f_train) == 20 and f_train[0].pid == 0  # training folders are relabelled 0..K-1


def test_distractors_are_only_in_the_gallery(small):
    root, _ = small
    labels = {s: {int(r[1]) for r in lines(os.path.join(root, "list", f"{s}.txt"))}
              for s in ("train", "query", "gallery", "test")}
    only = labels["gallery"] - labels["query"]
    assert only == set(range(FIRST_ID["distractor"], FIRST_ID["distractor"] + 2))
    assert not only & labels["train"] and only <= labels["test"]
    assert labels["query"] <= labels["gallery"]


def test_deterministic_per_seed(small, tmp_path):
    root, _ = small
    again = demo.write_all(str(tmp_path / "a"), seed=1, sets=["custom_example"], sizes={"custom_example": SMALL})
    assert digest(again["custom_example"]["path"]) == digest(root)
    other = demo.write_all(str(tmp_path / "b"), seed=2, sets=["custom_example"], sizes={"custom_example": SMALL})
    assert digest(other["custom_example"]["path"]) != digest(root)
    non_default = {k: v for k, v in SMALL.items() if v != demo.size_keywords("custom_example")[k]}
    assert demo.written_sets(str(tmp_path / "a")) == {"custom_example": {"seed": 1, "sizes": non_default}}


def test_size_knobs_and_their_checks():
    assert demo.size_keywords("custom_example") == dict(num_train_ids=64, num_test_ids=16, imgs_per_id=6,
                                                        queries_per_id=2, num_gallery_only_ids=4, num_cams=3)
    for sizes, message in [
        ({"num_test_id": 3}, r"custom_example\.num_test_id: unknown keyword; allowed for custom_example"),
        ({"num_cams": 2}, r"custom_example\.num_cams: 2 is too few; .* so >= 3"),
        ({"num_test_ids": 0}, r"custom_example\.num_test_ids: expected an integer >= 1, got 0")]:
        with pytest.raises(ConfigError, match=message):
            demo.check_sizes({"custom_example": sizes})


def test_cli_adds_the_set_to_an_existing_root_and_leaves_the_others(tmp_path, capsys):
    from ppufo.cli import make_demo_data as cli
    root = tmp_path / "demo"
    assert cli.main(["--root", str(root), "--sets", "sop", "--size", "sop.num_test_classes=3",
                     "--size", "sop.num_train_classes=2"]) == 0
    before, manifest = digest(root / "sop"), demo.written_sets(str(root))
    capsys.readouterr()
    assert cli.main(["--root", str(root), "--sets", "custom_example", "--seed", "5",
                     "--size", "custom_example.num_train_ids=3", "--size", "custom_example.num_test_ids=2"]) == 0
    text = capsys.readouterr().out
    assert "(num_train_ids=3, num_test_ids=2)" in text
    # gallery: 2 test ids x (6 - 2 queries) + 4 distractors x 6
    assert "list/logo_list: ImageList on query 4 imgs/2 ids; gallery 32 imgs/6 ids" in text
    assert "folder/logo_folder_all: ImageFolder on test 36 imgs/6 ids" in text
    assert digest(root / "sop") == before  # untouched
    assert demo.written_sets(str(root)) == {**manifest, "custom_example": {
        "seed": 5, "sizes": {"num_train_ids": 3, "num_test_ids": 2}}}
    with pytest.raises(SystemExit) as e:  # a set the root holds already is not rewritten without --overwrite
        cli.main(["--root", str(root), "--sets", "custom_example"])
    assert e.value.code == 2 and "it holds ['custom_example'] already" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(SystemExit):  # a folder that is not a demo root is never added to
        cli.main(["--root", str(tmp_path / "other"), "--sets", "custom_example"])
    assert "not a demo root" in capsys.readouterr().err and os.listdir(tmp_path / "other") == ["x.txt"]


def test_global_demo_sets_writes_it_beside_the_default_sets(tmp_path, monkeypatch):
    calls = []

    def fake(root, seed):
        calls.append(os.path.basename(root))
        os.makedirs(root)
    monkeypatch.setattr(demo.sets, "WRITERS", {"a": fake})
    g = {"data_root": str(tmp_path), "generate_demo_data": True, "seed": 3,
         "demo_sets": ["custom_example"], "demo_sizes": {"custom_example": {"num_train_ids": 2, "num_test_ids": 1}}}
    assert ensure_demo_data({"Global": g}) == ["a", "custom_example"] and calls == ["a"]
    assert len(lines(tmp_path / "custom_example" / "list" / "query.txt")) == 2
    assert ensure_demo_data({"Global": g}) == []  # complete: nothing rewritten
    with pytest.raises(DataError, match=r"custom_example: on disk num_train_ids=2, num_test_ids=1; the config "
                                        r"asks for default sizes[\s\S]*--sets a,custom_example"):
        ensure_demo_data({"Global": dict(g, demo_sizes={})})
    assert ensure_demo_data({"Global": dict(g, demo_sets=[], demo_sizes={})}) == []  # not read: not checked
    with pytest.raises(ConfigError, match=r"Global.demo_sets: unknown extra demo set\(s\) \['ufo_test_datasets'\]; "
                                          r"expected some of \['custom_example', 'person_val'\]"):
        ensure_demo_data({"Global": dict(g, demo_sets=["ufo_test_datasets"])})


def test_the_gallery_index_reads_the_same_lists(small, tmp_path):
    """ppufo-predict --build_index takes gallery.txt as ImageList does: camid ignored, paths relative
    to the list's folder; other line shapes are refused naming the file and line."""
    from ppufo.inference.gallery import list_gallery
    root, _ = small
    path = os.path.join(root, "list", "gallery.txt")
    paths, labels = list_gallery(path)
    want = [(os.path.join(root, "list", r[0]), r[1]) for r in lines(path)]
    assert list(zip(paths, labels)) == want and all(os.path.isfile(p) for p in paths)
    assert list_gallery(os.path.join(root, "list", "test.txt"))[1] == [r[1] for r in lines(
        os.path.join(root, "list", "test.txt"))]  # two columns
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg 1 2\n\nb.jpg 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: expected 'path label' or 'path label camid', got 'b\.jpg 1 2 3'"):
        list_gallery(str(bad))
