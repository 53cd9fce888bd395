"""tools/check_data.py decodes every training and test image of a config once, lists each bad
image, record and set, and exits non-zero if there is one."""
import os
import pickle
import re
import shutil
import struct
import sys

import pytest

from helpers import QUICK_SETS, ROOT
from ppufo.cli.check_data import main
from ppufo.data.recordio import RecordIOReader
from ppufo.demo import FACE_VAL_PAIRS

SUMMARY = re.compile(r"^  (.+?)\s+(\d+) checked\s+(\d+) bad  (\S+)$", re.M)


def run(monkeypatch, capsys, root, *args):
    """(exit message or None, stdout) of the tool on the quick demo sets under ``root``."""
    monkeypatch.setattr(sys, "argv", [
        "check_data.py", "-c", os.path.join(ROOT, "configs/quickstart.yaml"), "-o", f"Global.data_root={root}",
        f"Global.output_dir={root}/out", "Global.generate_demo_data=false",
        "Tasks.person.test_sets=[{name: Market1501, root: market1501}]",
        "Tasks.vehicle.test_sets=[{name: VeRi776, root: veri776}]", *args])
    try:
        main()
        code = None
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().out


def lines(path, skip=0):
    with open(path) as f:
        return [line for line in f.read().splitlines()[skip:] if line.strip()]


def jpgs(folder, junk=False):
    return [f for f in os.listdir(folder) if f.endswith(".jpg") and (junk or not f.startswith("-1_"))]


def expected_counts(root):
    """Items per set, counted from the files themselves (not through the readers)."""
    m, v, s = (os.path.join(root, d) for d in ("market1501", "veri776", "sop"))
    counts = {"train/face": 40 * 10,  # the demo MS1M: 40 identities x 10 images
              "train/person": len(jpgs(f"{m}/bounding_box_train")), "train/vehicle": len(lines(f"{v}/name_train.txt")),
              "train/product": len(lines(f"{s}/Ebay_train.txt", 1)),
              "test/person/Market1501 query": len(jpgs(f"{m}/query")),
              "test/person/Market1501 gallery": len(jpgs(f"{m}/bounding_box_test")),  # junk pid -1 skipped
              "test/vehicle/VeRi776 query": len(lines(f"{v}/name_query.txt")),
              "test/vehicle/VeRi776 gallery": len(lines(f"{v}/name_test.txt")),
              "test/product/SOP": len(lines(f"{s}/Ebay_test.txt", 1))}
    counts.update({f"test/face/{name}": 2 * n for name, n in FACE_VAL_PAIRS.items()})
    return counts


def summary(out):
    return {name: (int(n), int(bad)) for name, n, bad, _ in SUMMARY.findall(out)}


def test_clean_data_passes_with_full_counts(demo_root, monkeypatch, capsys):
    code, out = run(monkeypatch, capsys, demo_root)
    assert code is None, out
    want = expected_counts(demo_root)
    assert summary(out) == {name: (n, 0) for name, n in want.items()}
    assert f"ok: all {sum(want.values())} images of {len(want)} sets decode" in out
    assert "BAD" not in out


@pytest.fixture(scope="module")
def bad_root(demo_root, tmp_path_factory):
    """The quick demo sets with one bad item in each of four sets (a truncated JPEG, a text file
    named .JPG, a RecordIO record whose continuation flag says more parts follow, a .bin image
    that is not an image) and one listed test image missing (that set cannot be built)."""
    root = tmp_path_factory.mktemp("check_data")
    for name in QUICK_SETS:
        shutil.copytree(os.path.join(demo_root, name), root / name)
    train = sorted((root / "market1501" / "bounding_box_train").iterdir())[5:7]  # two in one set
    for path in train:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    sop = root / "sop" / lines(root / "sop" / "Ebay_test.txt", 1)[3].split()[-1]
    sop.write_text("not an image")
    reader = RecordIOReader(str(root / "ms1m" / "train.rec"))
    key, offset = 123, reader.offset(123)
    reader.close()
    with open(root / "ms1m" / "train.rec", "r+b") as fh:
        fh.seek(offset + 4)
        lrec = struct.unpack("<I", fh.read(4))[0]
        fh.seek(offset + 4)
        fh.write(struct.pack("<I", lrec | 1 << 29))
    with open(root / "faces_val" / "lfw.bin", "rb") as fh:
        images, issame = pickle.load(fh)  # noqa: S301 - the demo writer's own file
    images[7] = b"<html>not found</html>"
    with open(root / "faces_val" / "lfw.bin", "wb") as fh:
        pickle.dump((images, issame), fh, protocol=2)
    missing = root / "veri776" / "image_test" / lines(root / "veri776" / "name_test.txt")[0]
    missing.unlink()
    return root, [("train/person", str(train[0])), ("train/person", str(train[1])),
                  ("test/product/SOP", str(sop)), ("train/face", f"train.rec: record {key} at offset {offset}:"),
                  ("test/face/lfw", "lfw.bin: image 7:"), ("test/vehicle/VeRi776 gallery", str(missing))]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_bad_item_is_listed_and_the_exit_is_non_zero(bad_root, demo_root, monkeypatch, capsys, workers):
    root, bad = bad_root
    code, out = run(monkeypatch, capsys, root, "--workers", str(workers))
    assert isinstance(code, str) and code.startswith("error: 6 bad"), (code, out)
    listed = [line for line in out.splitlines() if line.startswith("BAD ")]
    assert len(listed) == 6, listed
    for name, what in bad:
        assert sum(line.startswith(f"BAD {name}") and what in line for line in listed) == 1, (name, what, listed)
    assert "expected 2 or 3 inside a multi-part record" in out
    assert "image file is truncated" in out and "cannot build the set: " in out
    # every other item is still checked: full counts, and each bad one counted once
    want = expected_counts(demo_root)
    n_bad = {name: sum(b == name for b, _ in bad) for name in want}
    built = {name: n for name, n in want.items() if name != "test/vehicle/VeRi776 gallery"}
    assert summary(out) == {name: (n, n_bad[name]) for name, n in built.items()}
    assert re.search(r"^  test/vehicle/VeRi776 gallery\s+not built$", out, re.M)


# ----------------------------------------------------------------------------- a user's own data

def own_data(root):
    """ImageList lists and ImageFolder folders of a user's own test data: query ids 1, 2, 9 (9
    not in the gallery) against gallery ids 1, 1, 2, 3; test labels 5, 5, 6, 6, 7 (7 alone)."""
    from PIL import Image

    def img(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 8), (120, 30, 200)).save(path)
    for name, ids in (("query", [1, 2, 9]), ("gallery", [1, 1, 2, 3]), ("test", [5, 5, 6, 6, 7]),
                      ("bad_query", [4]), ("bad_gallery", [5])):
        rows = []
        for n, pid in enumerate(ids):
            img(root / "mine" / name / f"{n}.jpg")
            img(root / "folders" / name / str(pid) / f"{n}.jpg")
            rows.append(f"{name}/{n}.jpg {pid}\n")
        (root / "mine" / f"{name}.txt").write_text("".join(rows))


def run_own(monkeypatch, capsys, root, person, product):
    monkeypatch.setattr(sys, "argv", [
        "check_data.py", "-c", os.path.join(ROOT, "configs/quickstart.yaml"), "-o", f"Global.data_root={root}",
        f"Global.output_dir={root}/out", "Global.generate_demo_data=false", "Tasks.face.test_sets=[]",
        "Tasks.vehicle.test_sets=[]", f"Tasks.person.test_sets={person}", f"Tasks.product.test_sets={product}",
        "--split", "test", "--workers", "0"])
    try:
        main()
        code = None
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().out


PERSON = ("[{name: ImageList, root: mine, query_list: query.txt, gallery_list: gallery.txt, alias: mine}, "
          "{name: ImageFolder, root: folders, protocol: reid, alias: folder}]")
PRODUCT = ("[{name: ImageList, root: mine, test_list: test.txt}, "
           "{name: ImageFolder, root: folders, protocol: recall_at_k, alias: folder-test}]")


def test_own_data_splits_are_checked_and_unmatched_queries_noted(tmp_path, monkeypatch, capsys):
    own_data(tmp_path)
    code, out = run_own(monkeypatch, capsys, tmp_path, PERSON, PRODUCT)
    assert code is None, out
    assert summary(out) == {"test/person/mine query": (3, 0), "test/person/mine gallery": (4, 0),
                            "test/person/folder query": (3, 0), "test/person/folder gallery": (4, 0),
                            "test/product/ImageList": (5, 0), "test/product/folder-test": (5, 0)}
    notes = [line.strip() for line in out.splitlines() if line.startswith("  note: ")]
    assert notes == [f"note: test/person/{s} query: 1 of 3 queries have nothing to find (its id is not in "
                     f"the gallery, only under the query's camera, or a distractor id); the scores leave "
                     f"them out" for s in ("mine", "folder")] + \
                    [f"note: test/product/{s}: 1 of 5 queries have nothing to find (the only image of its "
                     f"label); the scores leave them out" for s in ("ImageList", "folder-test")]
    assert "ok: all 24 images of 6 sets decode" in out


def test_own_data_set_without_any_match_is_bad(tmp_path, monkeypatch, capsys):
    own_data(tmp_path)
    person = ("[{name: ImageList, root: mine, query_list: bad_query.txt, gallery_list: bad_gallery.txt, "
              "alias: nomatch}]")
    code, out = run_own(monkeypatch, capsys, tmp_path, person, "[]")
    assert isinstance(code, str) and code.startswith("error: 1 bad"), (code, out)
    assert (f"BAD test/person/nomatch query: cannot build the set: ImageList: no query of "
            f"{tmp_path / 'mine' / 'bad_query.txt'} has a match in {tmp_path / 'mine' / 'bad_gallery.txt'} "
            f"(an image of its id); query ids [4], gallery ids [5]") in out
    assert summary(out) == {"test/person/nomatch gallery": (1, 0)}  # the gallery is still checked
    code, out = run_own(monkeypatch, capsys, tmp_path, "[{name: ImageList, root: mine, protocol: reid, "
                                                       "test_list: test.txt}]", "[]")
    assert code == ("error: Tasks.person.test_sets.0: ImageList: protocol reid reads query_list and "
                    "gallery_list; not given")


def test_a_dangling_link_in_a_dataset_is_bad_and_named(demo_root, tmp_path, monkeypatch, capsys):
    """The folder scanners pass over a link whose target is gone (counted as a non-image file, as
    Thumbs.db is): check_data names it as bad. The images are all still checked."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(os.path.join(demo_root, "market1501"), root / "market1501")
    for name in QUICK_SETS:
        if name != "market1501":
            os.symlink(os.path.join(demo_root, name), root / name)  # linked roots are walked too
    gone = root / "market1501" / "bounding_box_train" / "0001_c1s1_000001_00.jpg"
    os.symlink(tmp_path / "moved_away.jpg", gone)
    code, out = run(monkeypatch, capsys, root, "--workers", "0", "--split", "train")
    assert isinstance(code, str) and code.startswith("error: 1 bad (images, records, links or sets)"), (code, out)
    assert [line for line in out.splitlines() if line.startswith("BAD ")] == [
        f"BAD {gone}: dangling symbolic link to {tmp_path / 'moved_away.jpg'} (the target does not exist)"]
    assert "1 dangling symbolic link(s) under the dataset roots" in out
    assert summary(out) == {name: (n, 0) for name, n in expected_counts(demo_root).items() if name.startswith("train/")}
