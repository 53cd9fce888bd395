"""Readers of the person / vehicle / product / generic layouts, on generated data in the real
layouts and on hand-made files whose names and lines are known exactly."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ppufo import demo
from ppufo.data.datasets import DATASETS, ImageDataset
from ppufo.utils.errors import DataError


def build(name, root, **kw):
    return DATASETS.build({"name": name, "root": str(root), **kw})


def jpg(path, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path)


def lines(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(r + "\n" for r in rows))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Every layout, small: 5 train ids, 4 test ids, 5 images per id."""
    root = tmp_path_factory.mktemp("reid")
    kw = dict(num_train_ids=5, num_test_ids=4, imgs_per_id=5, seed=3)
    demo.write_market1501(root / "market", num_cams=6, num_distractors=3, num_junk=2, **kw)
    demo.write_dukemtmc(root / "duke", num_cams=8, num_gallery_only_ids=2, **kw)
    demo.write_msmt17(root / "msmt", num_cams=15, val_per_id=1, **kw)
    demo.write_msmt17(root / "msmt_v2", num_cams=15, version="V2", **kw)
    demo.write_veri776(root / "veri", num_cams=8, **kw)
    demo.write_vehicleid(root / "vid", **kw)
    demo.write_veriwild(root / "wild", num_cams=12, **kw)
    demo.write_veriwild(root / "wild_id", num_cams=12, list_style="id", **kw)
    demo.write_sop(root / "sop", num_train_classes=6, num_test_classes=4, imgs_per_class=3, seed=3)
    return root


def check_reid_protocol(query, gallery):
    for q in query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery), q


# ----------------------------------------------------------------------------- person

def test_market1501_counts_junk_and_distractors(small):
    m = build("Market1501", small / "market")
    train, query, gallery = m.train(), m.query(), m.gallery()
    assert (len(train), len(query), len(gallery)) == (25, 8, 4 * 3 + 3)
    assert len({r.pid for r in train}) == 5 and len({r.pid for r in query}) == 4
    assert m.skipped == {"gallery": 2}  # the two -1 junk images, counted, not returned
    assert m.skip_reasons == {"gallery": {"junk images (pid -1)": 2}}
    assert sum(r.pid == 0 for r in gallery) == 3 and all(r.pid != -1 for r in gallery)
    assert {r.pid for r in gallery} - {0} == {r.pid for r in query}
    assert not {r.pid for r in train} & {r.pid for r in query}
    assert all(0 <= r.camid < 6 for r in train + query + gallery)
    assert all(os.path.isabs(r.key) and os.path.isfile(r.key) for r in train + query + gallery)
    check_reid_protocol(query, gallery)
    s = m.summary()
    assert s["train"] == {"images": 25, "ids": 5, "cameras": len({r.camid for r in train})}
    assert s["gallery"]["images"] == 15 and s["gallery"]["ids"] == 5 and s["gallery"]["skipped"] == 2
    assert m.protocol == "reid"


def test_market1501_parses_names_exactly(tmp_path):
    for folder, names in {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c6s2_000001_01.jpg",
                                                 "0007_c3s3_076112_00.jpg", "0000_c1s1_000001_00.jpg"],
                          "query": ["0002_c2s1_000301_00.jpg", "-1_c2s1_000301_00.jpg"],
                          "bounding_box_test": ["0002_c5s1_000451_03.jpg", "0000_c4s2_000002_01.jpg",
                                                "-1_c1s1_000401_03.jpg"]}.items():
        for n in names:
            jpg(str(tmp_path / folder / n))
    (tmp_path / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")
    m = build("Market1501", tmp_path)
    assert [(os.path.basename(r.key), r.pid, r.camid) for r in m.train()] == [
        ("0002_c1s1_000451_03.jpg", 2, 0), ("0002_c6s2_000001_01.jpg", 2, 5), ("0007_c3s3_076112_00.jpg", 7, 2)]
    assert [(r.pid, r.camid) for r in m.query()] == [(2, 1)]
    assert sorted((r.pid, r.camid) for r in m.gallery()) == [(0, 3), (2, 4)]
    assert m.skip_reasons == {"train": {"distractor images (pid 0)": 1}, "query": {"junk images (pid -1)": 1},
                              "gallery": {"non-image files": 1, "junk images (pid -1)": 1}}
    assert m.skipped == {"train": 1, "query": 1, "gallery": 2}


def test_dukemtmc_counts_and_gallery_only_ids(small, tmp_path):
    d = build("DukeMTMC", small / "duke")
    train, query, gallery = d.train(), d.query(), d.gallery()
    assert (len(train), len(query), len(gallery)) == (25, 8, 4 * 3 + 2 * 5)
    assert len({r.pid for r in gallery}) == 6 and len({r.pid for r in gallery} - {r.pid for r in query}) == 2
    assert all(0 <= r.camid < 8 for r in train + query + gallery) and d.skipped == {}
    check_reid_protocol(query, gallery)
    jpg(str(tmp_path / "bounding_box_train" / "0001_c2_f0046182.jpg"))
    jpg(str(tmp_path / "bounding_box_train" / "0005_c8_f0000001.jpg"))
    assert [(r.pid, r.camid) for r in build("DukeMTMC", tmp_path).train()] == [(1, 1), (5, 7)]


def test_msmt17_lists_cameras_and_val(small, tmp_path):
    m = build("MSMT17", small / "msmt")
    assert (len(m.train()), len(m.val()), len(m.query()), len(m.gallery())) == (20, 5, 8, 12)
    assert len({r.pid for r in m.train()}) == 5 and {r.pid for r in m.val()} == {r.pid for r in m.train()}
    assert {r.pid for r in m.query()} == {0, 1, 2, 3}  # test pids restart at 0, as in the official lists
    with_val = build("MSMT17", small / "msmt", add_val_to_train=True)
    assert len(with_val.train()) == 25 and with_val.summary()["train"]["ids"] == 5
    check_reid_protocol(m.query(), m.gallery())
    for r in m.train() + m.query():  # camera = third '_' field, 0-based
        assert r.camid == int(os.path.basename(r.key).split("_")[2]) - 1 and 0 <= r.camid < 15
    v2 = build("MSMT17", small / "msmt_v2")
    assert v2.found == {"train images": str(small / "msmt_v2" / "mask_train_v2"),
                        "test images": str(small / "msmt_v2" / "mask_test_v2")}
    assert len(v2.train()) == 20
    # hand-made list: exact values
    jpg(str(tmp_path / "train" / "0003" / "0003_012_07_0303morning_0015_0.jpg"))
    os.makedirs(tmp_path / "test")
    lines(str(tmp_path / "list_train.txt"), ["0003/0003_012_07_0303morning_0015_0.jpg 3"])
    r, = build("MSMT17", tmp_path).train()
    assert (r.pid, r.camid, r.key) == (3, 6, str(tmp_path / "train" / "0003" / "0003_012_07_0303morning_0015_0.jpg"))


# ----------------------------------------------------------------------------- vehicle

def test_veri776_counts_and_names(small, tmp_path):
    v = build("VeRi776", small / "veri")
    assert (len(v.train()), len(v.query()), len(v.gallery())) == (25, 4, 16)
    assert v.summary()["query"] == {"images": 4, "ids": 4, "cameras": len({r.camid for r in v.query()})}
    check_reid_protocol(v.query(), v.gallery())
    jpg(str(tmp_path / "image_train" / "0001_c001_00016450_0.jpg"))
    jpg(str(tmp_path / "image_train" / "0776_c020_00099999_1.jpg"))
    lines(str(tmp_path / "name_train.txt"), ["0001_c001_00016450_0.jpg", "", "0776_c020_00099999_1.jpg"])
    assert [(r.pid, r.camid) for r in build("VeRi776", tmp_path).train()] == [(1, 0), (776, 19)]


def test_vehicleid_test_sizes(small, tmp_path):
    by_size = {n: build("VehicleID", small / "vid", test_size=n).test() for n in (800, 1600, 2400)}
    assert [len({r.pid for r in by_size[n]}) for n in (800, 1600, 2400)] == [1, 2, 4]
    assert [len(by_size[n]) for n in (800, 1600, 2400)] == [5, 10, 20]
    assert {r.key for r in by_size[800]} <= {r.key for r in by_size[1600]} <= {r.key for r in by_size[2400]}
    v = build("VehicleID", small / "vid")
    assert v.protocol == "vehicleid" and len(v.train()) == 25 and v.summary()["test"]["ids"] == 4
    assert all(r.camid == int(os.path.basename(r.key)[:-4]) for r in v.train())  # camid := image id
    with pytest.raises(DataError, match="no 'query' split"):
        v.query()
    with pytest.raises(DataError, match=r"test_size=1000: expected one of \(800, 1600, 2400, 13164\)"):
        build("VehicleID", small / "vid", test_size=1000)
    jpg(str(tmp_path / "image" / "0000042.jpg"))
    lines(str(tmp_path / "train_test_split" / "train_list.txt"), ["0000042 0017"])
    r, = build("VehicleID", tmp_path).train()
    assert (r.pid, r.camid) == (17, 42)


def test_veriwild_both_list_spellings(small):
    orig = build("VeRiWild", small / "wild", test_size=10000)
    ids = build("VeRiWild", small / "wild_id", test_size=10000)
    split = small / "wild" / "train_test_split"
    assert orig.query() and len(orig.query()) == 4 and len(orig.gallery()) == 16 and len(orig.train()) == 25
    assert orig.found["query list"] == str(split / "test_10000_query.txt")
    assert orig.found["gallery list"] == str(split / "test_10000.txt")
    # same images; cameras from vehicle_info.txt (original) equal the cameras on the lines (re-issue)
    for a, b in [(orig.query(), ids.query()), (orig.gallery(), ids.gallery())]:
        assert [(os.path.relpath(r.key, orig.root), r.pid, r.camid) for r in a] == \
               [(os.path.relpath(r.key, ids.root), r.pid, r.camid) for r in b]
    assert sorted({r.pid for r in ids.train()}) == list(range(5))  # start0 lists are relabelled
    assert ids.found["query list"].endswith("test_10000_id_query.txt")
    assert ids.found["train list"].endswith("train_list_start0.txt") and "vehicle_info" not in ids.found
    assert [len({r.pid for r in build("VeRiWild", small / "wild", test_size=n).query()})
            for n in (3000, 5000, 10000)] == [1, 2, 4]
    check_reid_protocol(orig.query(), orig.gallery())


def test_veriwild_vehicle_info_header_and_missing_entry(small, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(small / "wild", root)
    info = root / "train_test_split" / "vehicle_info.txt"
    rows = info.read_text().splitlines()
    info.write_text("id/image;Camera ID;Time;Model;Type;Color\n" + "\n".join(rows) + "\n")
    src = build("VeRiWild", root)
    assert len(src.train()) == 25 and len(src.cameras()) == len(rows)
    key = rows[0].split(";")[0]
    info.write_text("\n".join(rows[1:]) + "\n")
    with pytest.raises(DataError, match=f"train_list.txt:1: {key} has no entry in .*vehicle_info.txt"):
        build("VeRiWild", root).train()


# ----------------------------------------------------------------------------- product, generic

def test_sop_counts_and_header(small, tmp_path):
    s = build("SOP", small / "sop")
    assert (len(s.train()), len(s.test())) == (18, 12) and s.protocol == "recall_at_k"
    assert sorted({r.pid for r in s.test()}) == [7, 8, 9, 10] and {r.camid for r in s.test()} == {0}
    assert s.summary() == {"train": {"images": 18, "ids": 6, "cameras": 1},
                           "test": {"images": 12, "ids": 4, "cameras": 1}}
    jpg(str(tmp_path / "chair_final" / "111_0.JPG"))
    lines(str(tmp_path / "Ebay_train.txt"), ["image_id class_id super_class_id path", "1 5 3 chair_final/111_0.JPG"])
    src = build("SOP", tmp_path)
    assert [(r.pid, r.camid) for r in src.train()] == [(5, 0)] and src.super_classes == {5: 3}
    lines(str(tmp_path / "Ebay_test.txt"), ["id class super path", "1 5 3 chair_final/111_0.JPG"])
    with pytest.raises(DataError,
                       match=r"Ebay_test.txt:1: expected the header 'image_id class_id super_class_id path'"):
        build("SOP", tmp_path).test()


def test_image_list_and_folder(tmp_path):
    for rel in ["a/1.jpg", "a/2.png", "b/3.jpg"]:
        jpg(str(tmp_path / rel))
    lines(str(tmp_path / "list.txt"), ["a/1.jpg 7 0", "a/2.png 7 2", "b/3.jpg   9  1"])
    src = build("ImageList", tmp_path, list_file="list.txt")
    assert [(os.path.relpath(r.key, tmp_path), r.pid, r.camid) for r in src.train()] == \
           [("a/1.jpg", 7, 0), ("a/2.png", 7, 2), ("b/3.jpg", 9, 1)]
    assert src.protocol is None and src.summary() == {"train": {"images": 3, "ids": 2, "cameras": 3}}
    lines(str(tmp_path / "list.csv"), ["a/1.jpg,4", "b/3.jpg,x"])
    with pytest.raises(DataError, match=r"list.csv:2: label must be an integer, got 'x'"):
        build("ImageList", tmp_path, list_file="list.csv", delimiter=",").train()
    faces = tmp_path / "faces"
    for rel in ["0/0.jpg", "0/1.jpg", "2/0.jpg", "10/0.jpg", "10/1.jpg", "10/2.jpg"]:
        jpg(str(faces / rel))
    os.makedirs(faces / "5")                 # an empty identity folder
    (faces / "0" / "notes.txt").write_text("x")
    f = build("ImageFolder", faces)
    recs = f.train()
    assert [r.pid for r in recs] == [0, 0, 1, 2, 2, 2]  # numeric folder order: 0, 2, 10
    assert f.identities == ["0", "2", "10"]
    assert f.skip_reasons == {"train": {"non-image files": 1, "empty identity folders": 1}}


def test_merged_sources_get_disjoint_contiguous_labels(small):
    parts = [(s, s.train()) for s in (build("Market1501", small / "market"), build("DukeMTMC", small / "duke"),
                                      build("MSMT17", small / "msmt"))]
    ds = ImageDataset(parts)
    assert len(ds) == 25 + 25 + 20 and ds.num_classes == 15
    assert sorted(set(ds.labels.tolist())) == list(range(15))
    spans = [set(ds.labels[ds.owner == i].tolist()) for i in range(3)]
    assert [len(s) for s in spans] == [5, 5, 5]
    assert not (spans[0] & spans[1] or spans[0] & spans[2] or spans[1] & spans[2])
    # item 30 is DukeMTMC's 6th training image
    img, label, cam = ds[(30, 0)]
    assert img.size == (64, 128) and label == ds.labels[30] and cam == parts[1][1][5].camid


# ----------------------------------------------------------------------------- bad input

def test_missing_folders_and_list_files_are_named(small, tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        build("Market1501", tmp_path / "nothing")
    m = tmp_path / "m"
    shutil.copytree(small / "market", m)
    shutil.rmtree(m / "query")
    with pytest.raises(DataError, match=f"folder not found: {m / 'query'}"):
        build("Market1501", m).query()
    v = tmp_path / "v"
    shutil.copytree(small / "veri", v)
    os.remove(v / "name_query.txt")
    with pytest.raises(DataError, match=f"file not found: {v / 'name_query.txt'}"):
        build("VeRi776", v).query()
    w = tmp_path / "w"
    shutil.copytree(small / "wild", w)
    os.remove(w / "train_test_split" / "test_5000_query.txt")
    with pytest.raises(DataError, match=r"none of \['test_5000_query.txt', 'test_5000_id_query.txt'\] found"):
        build("VeRiWild", w, test_size=5000).query()
    with pytest.raises(DataError, match=r"none of \['train', 'mask_train_v2'\] found"):
        build("MSMT17", tmp_path / "v")


def test_bad_image_name_is_named(small, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(small / "duke", d)
    jpg(str(d / "bounding_box_test" / "0001_c2.jpg"))
    with pytest.raises(DataError, match=r"0001_c2.jpg does not match the pattern '<pid>_c<cam>_f<frame>.jpg' "
                                        r"\(e.g. 0001_c2_f0046182.jpg"):
        build("DukeMTMC", d).gallery()


@pytest.mark.parametrize("folder, name, list_file, line, split, error", [
    ("msmt", "MSMT17", "list_gallery.txt", "0000/0000_000_01_0303morning_0015_0.jpg", "gallery",
     r"list_gallery.txt:{n}: expected 2 fields \(relative/path.jpg pid\), got 1"),
    ("msmt", "MSMT17", "list_query.txt", "0099/0099_000_01_0303morning_0015_0.jpg 99", "query",
     r"list_query.txt:{n}: listed image not found: .*0099_000_01"),
    ("msmt", "MSMT17", "list_val.txt", "0001/odd_name.jpg 1", "val",
     r"list_val.txt:{n}: image .*odd_name.jpg does not match the pattern '<pid>_<index>_<cam>_"),
    ("vid", "VehicleID", "train_test_split/train_list.txt", "9999999 3", "train",
     r"train_list.txt:{n}: listed image not found: .*image/9999999.jpg"),
    ("veri", "VeRi776", "name_train.txt", "car_0001.jpg", "train",
     r"name_train.txt:{n}: image .*car_0001.jpg does not match the pattern"),
    ("wild", "VeRiWild", "train_test_split/train_list.txt", "no_slash_here", "train",
     r"train_list.txt:{n}: expected '<vid>/<img>'"),
])
def test_bad_list_line_is_named_with_its_line(small, tmp_path, folder, name, list_file, line, split, error):
    root = tmp_path / folder
    shutil.copytree(small / folder, root)
    with open(root / list_file, "a") as f:
        f.write(line + "\n")
    n = len((root / list_file).read_text().splitlines())
    with pytest.raises(DataError, match=error.replace("{n}", str(n))):
        getattr(build(name, root), split)()
