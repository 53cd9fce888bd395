"""The UFO reference's released test-set layouts: FaceVerificationFilelist (faces_emore_val/),
SOPCsvList (Stanford_Online_Products/test.txt), the demo tree that holds them, and their errors."""
import copy
import hashlib
import json
import os

import numpy as np
import paddle
import pytest
from PIL import Image

from helpers import tiny_config
from ppufo.data.datasets import DATASETS, build_source
from ppufo.demo import FACE_VAL_PAIRS, UFO_TEST_SETS, WRITERS, ufo_test_sets, write_all, write_ufo_test_datasets
from ppufo.demo.released import TREE
from ppufo.demo.sets import MANIFEST, completed_sets
from ppufo.engine.evaluator import Evaluator, build_test_sets
from ppufo.utils.errors import DataError

REFERENCE_FOLDERS = ["MSMT17_V2", "Market-1501-v15.09.15", "Stanford_Online_Products", "VERI-Wild",
                     "faces_emore_val", "vehicleid", "veri"]


def digest(root):
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode() + open(p, "rb").read())
    return h.hexdigest()


@pytest.fixture
def tree(ufo_tree):
    return ufo_tree


# ----------------------------------------------------------------------------- the demo tree

def test_tree_has_the_reference_folders_and_files(tree):
    root, info = tree
    assert sorted(os.listdir(root)) == REFERENCE_FOLDERS
    faces = sorted(os.listdir(os.path.join(root, "faces_emore_val")))
    assert faces == sorted([f"{s}.filelist" for s in FACE_VAL_PAIRS] + [f"{s}_label.npy" for s in FACE_VAL_PAIRS]
                           + list(FACE_VAL_PAIRS))  # the .bin files are gone
    sop = os.listdir(os.path.join(root, "Stanford_Online_Products"))
    assert "test.txt" in sop and "train.txt" in sop and not [f for f in sop if f.startswith("Ebay")]
    assert sorted(os.listdir(os.path.join(root, "MSMT17_V2"))) == [
        "list_gallery.txt", "list_query.txt", "list_train.txt", "list_val.txt", "mask_test_v2", "mask_train_v2"]
    assert sorted(os.listdir(os.path.join(root, "VERI-Wild", "train_test_split"))) == sorted(
        ["train_list.txt", "vehicle_info.txt"] + [f"test_{n}_id{q}.txt" for n in (3000, 5000, 10000)
                                                  for q in ("", "_query")])
    assert os.path.isfile(os.path.join(root, "vehicleid", "train_test_split", "test_list_2400.txt"))
    assert {f: i["demo_set"] for f, i in info.items()} == {f: s for f, (s, _) in TREE.items()}
    # the lines as the reference reads them: one path per face line, 'path,label' for SOP
    assert open(os.path.join(root, "faces_emore_val", "lfw.filelist")).read().splitlines()[:2] == [
        "lfw/00000.jpg", "lfw/00001.jpg"]
    first = open(os.path.join(root, "Stanford_Online_Products", "test.txt")).readline().strip()
    assert first == "bicycle_final/31_0.JPG,31"


def test_face_filelists_hold_the_bin_sets_pair_for_pair(tree, demo_root):
    root, info = tree
    for name, pairs in FACE_VAL_PAIRS.items():
        flist = build_source({"name": "FaceVerificationFilelist", "root": "faces_emore_val", "set_name": name}, root)
        binset = DATASETS.build({"name": "FaceVerificationBin", "root": os.path.join(demo_root, "faces_val"),
                                 "set_name": name})
        records, issame = flist.pairs()
        bin_records, bin_issame = binset.pairs()
        assert flist.name == f"FaceVerificationFilelist[{name}]" and flist.protocol == "verification"
        assert info["faces_emore_val"]["converted"][name] == {
            "images": 2 * pairs, "pairs": pairs, "same": int(bin_issame.sum())}
        assert len(records) == 2 * pairs and issame.dtype == np.bool_
        assert np.array_equal(issame, bin_issame) and 0 < issame.sum() < pairs
        # image i of the filelist is image i of the .bin: same pixels, so the same pairs
        for r, b in zip(records, bin_records):
            assert np.array_equal(np.asarray(flist.read(r)), np.asarray(binset.read(b))), (name, r.key)
        assert records[3].key == os.path.join(root, "faces_emore_val", name, "00003.jpg")


def test_sop_csv_list_matches_the_official_lists(tree, demo_root):
    root, info = tree
    csv = build_source({"name": "SOPCsvList", "root": "Stanford_Online_Products"}, root)
    sop = DATASETS.build({"name": "SOP", "root": os.path.join(demo_root, "sop")})
    assert csv.protocol == sop.protocol == "recall_at_k"
    assert info["Stanford_Online_Products"]["converted"] == {
        "train": {"images": 180, "classes": 30}, "test": {"images": 120, "classes": 20}}
    for split in ("train", "test"):
        got, want = getattr(csv, split)(), getattr(sop, split)()
        assert [(os.path.relpath(r.key, csv.root), r.pid) for r in got] == \
               [(os.path.relpath(r.key, sop.root), r.pid) for r in want]
    assert open(csv.test()[7].key, "rb").read() == open(sop.test()[7].key, "rb").read()


def test_every_reference_folder_opens_as_configured(tree, full_demo_root, capsys):
    """ufo_test_sets() names all 12 sets; each opens from the tree with as many images as the
    demo set it was made of (so e.g. VeRi-Wild's converted lists keep every query and camera)."""
    root, _ = tree
    assert [e.get("set_name") or e["name"] for _, e in UFO_TEST_SETS] == [
        "calfw", "cplfw", "lfw", "cfp_ff", "cfp_fp", "agedb_30", "Market1501", "MSMT17", "VeRi776",
        "VehicleID", "VeRiWild", "SOPCsvList"]
    config = {"Global": {"data_root": root}, "Tasks": {t: {"test_sets": e} for t, e in ufo_test_sets().items()}}
    sets = build_test_sets(config)
    assert [(s.task, s.label) for s in sets] == [
        ("face", "calfw"), ("face", "cplfw"), ("face", "lfw"), ("face", "cfp_ff"), ("face", "cfp_fp"),
        ("face", "agedb_30"), ("person", "Market1501"), ("person", "MSMT17"), ("vehicle", "VeRi776"),
        ("vehicle", "VehicleID-2400"), ("vehicle", "VeRiWild-10000"), ("product", "SOPCsvList")]
    official = {"Market1501": ("Market1501", "market1501", {}), "MSMT17": ("MSMT17", "msmt17", {}),
                "VeRi776": ("VeRi776", "veri776", {}), "VeRiWild-10000": ("VeRiWild", "veriwild", {"test_size": 10000})}
    for s in sets:
        if s.label in official:
            name, folder, kw = official[s.label]
            demo = DATASETS.build({"name": name, "root": os.path.join(full_demo_root, folder), **kw})
            for split in ("query", "gallery"):
                got = [(os.path.basename(r.key), r.pid, r.camid) for r in getattr(s.source, split)()]
                assert got == [(os.path.basename(r.key), r.pid, r.camid) for r in getattr(demo, split)()]
                assert got
    from ppufo.cli.make_demo_data import describe
    lines = describe("ufo_test_datasets", root, {}).split("\n")
    assert len(lines) == 12 and lines[0] == "face/calfw: FaceVerificationFilelist[calfw] on faces_emore_val/: 120 pairs"
    assert lines[-1].strip() == "product/SOPCsvList: SOPCsvList on Stanford_Online_Products/: test 120 imgs"


def test_tree_is_the_same_drawn_copied_or_through_write_all(tree, full_demo_root, tmp_path):
    root, _ = tree
    # drawn afresh (no reuse): the SOP part equals the copied one byte for byte
    write_ufo_test_datasets(str(tmp_path / "drawn"), WRITERS, seed=0, folders=["Stanford_Online_Products"])
    assert digest(tmp_path / "drawn" / "Stanford_Online_Products") == \
        digest(os.path.join(root, "Stanford_Online_Products"))
    # write_all reuses the demo sets its manifest lists as complete with the same seed
    demo = tmp_path / "demo"
    demo.mkdir()
    for _, (s, _) in TREE.items():
        os.symlink(os.path.join(full_demo_root, s), demo / s)
    (demo / MANIFEST).write_text(json.dumps({s: 0 for s, _ in TREE.values()}))
    assert set(completed_sets(str(demo), 0)) == {s for s, _ in TREE.values()} and completed_sets(str(demo), 1) == {}
    written = write_all(str(demo), seed=0, sets=["ufo_test_datasets"])
    assert all("copied_from" in i for i in written["ufo_test_datasets"]["info"].values())
    assert digest(demo / "ufo_test_datasets") == digest(root)
    with pytest.raises(ValueError, match=r"unknown reference folder\(s\) \['faces_val'\]"):
        write_ufo_test_datasets(str(tmp_path / "x"), WRITERS, folders=["faces_val"])


# ----------------------------------------------------------------------------- same numbers as the official layouts

class PixelModel:
    """Stands in for a network: the feature is the image pooled to 8x8 (learnable demo sets
    make it far better than chance, and far from perfect)."""
    training = False

    def eval(self):
        pass

    def train(self):
        pass

    def embed(self, imgs, task, normalize=False):
        f = paddle.nn.functional.adaptive_avg_pool2d(imgs, 8)
        return f.reshape([f.shape[0], -1])


def test_reference_layouts_evaluate_to_the_official_layouts_numbers(tree, full_demo_root, tmp_path):
    root, _ = tree
    config = copy.deepcopy(tiny_config(full_demo_root, tmp_path / "out"))
    faces = [dict(e, alias=f"{e['set_name']}-filelist") for e in ufo_test_sets()["face"]]
    for e in faces:
        e["root"] = os.path.join(root, e["root"])
    config["Tasks"] = {
        "face": {"test_sets": faces + [{"name": "FaceVerificationBin", "root": "faces_val", "set_name": s}
                                       for s in FACE_VAL_PAIRS]},
        "product": {"test_sets": [{"name": "SOPCsvList", "root": os.path.join(root, "Stanford_Online_Products")},
                                  {"name": "SOP", "root": "sop"}]},
        "vehicle": {"test_sets": [{"name": "VeRiWild", "root": os.path.join(root, "VERI-Wild"), "alias": "wild-ref",
                                   "test_size": 10000},
                                  {"name": "VeRiWild", "root": "veriwild", "test_size": 10000}]}}
    results = {r["set"]: r for r in Evaluator(config, PixelModel()).evaluate()["sets"]}
    assert len(results) == 6 * 2 + 2 + 2
    keys = ("accuracy_mean", "accuracy_std", "best_threshold_mean", "num_pairs")
    for name in FACE_VAL_PAIRS:
        ref, bin_ = results[f"{name}-filelist"], results[name]
        assert ref["dataset"] == f"FaceVerificationFilelist[{name}]" and ref["protocol"] == "verification"
        assert {k: ref[k] for k in keys} == {k: bin_[k] for k in keys}
        assert 0.55 < ref["accuracy_mean"] < 0.99, (name, ref["accuracy_mean"])  # informative, not degenerate
    ref, sop = results["SOPCsvList"], results["SOP"]
    recall = [k for k in sop if k.startswith("recall@")]
    assert recall and {k: ref[k] for k in recall} == {k: sop[k] for k in recall}
    assert 1 / 20 < ref["recall@1"] < 1.0
    assert results["wild-ref"]["mAP"] == results["VeRiWild-10000"]["mAP"] and 0 < results["wild-ref"]["mAP"] < 1


# ----------------------------------------------------------------------------- bad input

def tiny_jpeg(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


@pytest.fixture
def faces(tmp_path):
    """A 2-pair filelist set 'lfw' in tmp_path; returns (folder, filelist path, label path)."""
    for i in range(4):
        tiny_jpeg(str(tmp_path / "lfw" / f"{i}.jpg"), 40 * i)
    flist, label = tmp_path / "lfw.filelist", tmp_path / "lfw_label.npy"
    flist.write_text("".join(f"lfw/{i}.jpg\n" for i in range(4)))
    np.save(label, np.array([True, False]))
    return tmp_path, flist, label


def open_faces(folder):
    return DATASETS.build({"name": "FaceVerificationFilelist", "root": str(folder), "set_name": "lfw"}).pairs()


def test_face_filelist_reads_a_good_set_and_tolerates_what_the_reference_does(faces):
    folder, flist, label = faces
    records, issame = open_faces(folder)
    assert [os.path.basename(r.key) for r in records] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert issame.tolist() == [True, False]
    # 0/1 integers, a trailing second field (the reference keeps the first) and blank lines
    np.save(label, np.array([0, 1], np.int64))
    flist.write_text("lfw/0.jpg 7\nlfw/1.jpg\n\nlfw/2.jpg\nlfw/3.jpg\n")
    records, issame = open_faces(folder)
    assert issame.tolist() == [False, True] and len(records) == 4


@pytest.mark.parametrize("case, expect", [
    ("missing image", r"lfw\.filelist:3: listed image not found: .*lfw/9\.jpg"),
    ("odd lines", r"lfw\.filelist: 3 images, an odd number; .* the image on line 4 has no partner"),
    ("label length", r"lfw_label\.npy: 3 labels, but .*lfw\.filelist lists 4 images \(2 pairs\)"),
    ("label 2-D", r"lfw_label\.npy: array of shape \(2, 1\); expected a 1-D array"),
    ("label value", r"lfw_label\.npy: record 1 is 2; expected an issame flag, bool or 0/1"),
    ("label float", r"lfw_label\.npy: record 0 is 0\.5; expected an issame flag"),
    ("label strings", r"lfw_label\.npy: dtype <U4; expected bool or 0/1"),
    ("label pickle", r"lfw_label\.npy: cannot read it as a \.npy array \(loaded with allow_pickle=False\)"),
    ("label not npy", r"lfw_label\.npy: cannot read it as a \.npy array"),
    ("no images", r"lfw\.filelist: lists no images"),
])
def test_face_filelist_errors_name_file_and_line(faces, case, expect):
    folder, flist, label = faces
    if case == "missing image":
        flist.write_text("lfw/0.jpg\nlfw/1.jpg\nlfw/9.jpg\nlfw/3.jpg\n")
    elif case == "odd lines":
        flist.write_text("lfw/0.jpg\n\nlfw/1.jpg\nlfw/2.jpg\n")
    elif case == "no images":
        flist.write_text("\n\n")
    else:
        value = {"label length": np.array([1, 0, 1], bool), "label 2-D": np.array([[1], [0]], bool),
                 "label value": np.array([1, 2]), "label float": np.array([0.5, 1.0]),
                 "label strings": np.array(["True", "no"]), "label pickle": np.array([True, None], object),
                 "label not npy": None}[case]
        if value is None:
            label.write_bytes(b"True\nFalse\n")
        else:
            np.save(label, value, allow_pickle=True)
    with pytest.raises(DataError, match=expect):
        open_faces(folder)


def test_face_filelist_missing_files_list_what_is_there(faces):
    folder, flist, label = faces
    with pytest.raises(DataError, match=r"cfp_fp\.filelist not found; \.filelist sets in .*: \['lfw'\]"):
        DATASETS.build({"name": "FaceVerificationFilelist", "root": str(folder), "set_name": "cfp_fp"})
    label.unlink()
    with pytest.raises(DataError, match=r"file not found: .*lfw_label\.npy"):
        open_faces(folder)


@pytest.fixture
def sop_csv(tmp_path):
    for i in range(4):
        tiny_jpeg(str(tmp_path / "mug_final" / f"{i}.JPG"), 50 * i)
    (tmp_path / "test.txt").write_text("mug_final/0.JPG,5\nmug_final/1.JPG,5\nmug_final/2.JPG,6\nmug_final/3.JPG,6\n")
    return tmp_path


def open_sop(folder):
    return DATASETS.build({"name": "SOPCsvList", "root": str(folder)}).test()


@pytest.mark.parametrize("lines, expect", [
    ("mug_final/0.JPG,5\nmug_final/1.JPG,five\n", r"test\.txt:2: label must be an integer class id, got 'five'$"),
    ("path,label\nmug_final/0.JPG,5\n", r"test\.txt:1: label must be .* got 'label' \(the file has no header line\)"),
    ("mug_final/0.JPG,5\n\nmug_final/7.JPG,5\n", r"test\.txt:3: listed image not found: .*mug_final/7\.JPG"),
    ("mug_final/0.JPG,5,1\n", r"test\.txt:1: expected 2 fields \(relative/path\.jpg,label\), got 3"),
    ("mug_final/0.JPG 5\n", r"test\.txt:1: expected 2 fields \(relative/path\.jpg,label\), got 1"),
])
def test_sop_csv_list_errors_name_file_and_line(sop_csv, lines, expect):
    assert [r.pid for r in open_sop(sop_csv)] == [5, 5, 6, 6]
    (sop_csv / "test.txt").write_text(lines)
    with pytest.raises(DataError, match=expect):
        open_sop(sop_csv)


def test_sop_csv_list_without_train_list_is_a_test_set_only(sop_csv):
    src = DATASETS.build({"name": "SOPCsvList", "root": str(sop_csv)})
    assert len(src.test()) == 4
    with pytest.raises(DataError, match=r"SOPCsvList: file not found: .*train\.txt"):
        src.train()
