import os
import shutil

import numpy as np
import pytest

from ppufo.data.datasets import DATASETS, ImageDataset
from ppufo.demo import render_identity, write_all
from ppufo.utils.errors import DataError


def build(name, root, **kw):
    return DATASETS.build({"name": name, "root": root, **kw})


def test_demo_layouts_read_back_with_exact_counts(demo_root):
    m = build("Market1501", os.path.join(demo_root, "market1501"))
    train, query, gallery = m.train(), m.query(), m.gallery()
    assert len(train) == 24 * 8 and len({r.pid for r in train}) == 24
    assert len(query) == 32 and len({r.pid for r in query}) == 16  # 2 queries per test id
    assert len(gallery) == 16 * 8 - 32 + 4 and m.skipped == {"gallery": 4}  # +4 distractors, 4 junk skipped
    assert sum(r.pid == 0 for r in gallery) == 4 and all(r.pid != -1 for r in gallery)
    assert {r.camid for r in train} <= set(range(6)) and min(r.camid for r in train) == 0
    # every query id appears in the gallery under another camera
    for q in query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery)
    v = build("VeRi776", os.path.join(demo_root, "veri776"))
    assert (len(v.train()), len(v.query()), len(v.gallery())) == (192, 16, 112)
    s = build("SOP", os.path.join(demo_root, "sop"))
    assert (len(s.train()), len(s.test())) == (180, 120) and len({r.pid for r in s.test()}) == 20


def test_merged_sources_get_disjoint_labels(demo_root):
    m = build("Market1501", os.path.join(demo_root, "market1501"))
    v = build("VeRi776", os.path.join(demo_root, "veri776"))
    ds = ImageDataset([(m, m.train()), (v, v.train())])
    assert ds.num_classes == 48 and len(ds) == 384
    assert not set(ds.labels[:192]) & set(ds.labels[192:])
    img, label, cam = ds[(0, 123)]
    assert img.size == (64, 128) and label == ds.labels[0] and cam == ds.cameras[0]  # no transform: PIL image


def test_array_backed_splits_merge_like_record_lists(demo_root):
    from ppufo.data.datasets.base import RecordArray
    m = build("Market1501", os.path.join(demo_root, "market1501"))
    face = build("MS1MRecordIO", os.path.join(demo_root, "ms1m"))
    train = face.train()
    assert isinstance(train, RecordArray)  # no Record object per image until one is asked for
    listed = list(train)
    assert len(listed) == len(train) == 400 and listed[7] == train[7] and type(listed[7].key) is int
    as_array = ImageDataset([(m, m.train()), (face, train)])
    as_list = ImageDataset([(m, m.train()), (face, listed)])
    np.testing.assert_array_equal(as_array.labels, as_list.labels)
    np.testing.assert_array_equal(as_array.cameras, as_list.cameras)
    assert as_array.num_classes == 24 + 40
    assert [as_array.record(i) for i in range(len(as_array))] == [as_list.record(i) for i in range(len(as_list))]
    assert as_array.record(192 + 7) == listed[7] and as_array.record(5) == m.train()[5]
    np.testing.assert_array_equal(np.asarray(as_array.load(192 + 7)), np.asarray(face.read(listed[7])))
    with pytest.raises(ValueError, match="3 keys, 2 pids"):
        RecordArray([1, 2, 3], [0, 1])


def test_bad_inputs_name_the_file(demo_root, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(os.path.join(demo_root, "market1501"), root)
    (root / "bounding_box_train" / "person.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"person.jpg does not match the pattern"):
        build("Market1501", str(root)).train()
    v = tmp_path / "v"
    shutil.copytree(os.path.join(demo_root, "veri776"), v)
    os.remove(v / "name_query.txt")
    with pytest.raises(DataError, match="name_query.txt"):
        build("VeRi776", str(v)).query()
    with open(v / "name_test.txt", "a") as f:
        f.write("9999_c001_00000001_0.jpg\n")
    with pytest.raises(DataError, match="listed image not found.*9999_c001"):
        build("VeRi776", str(v)).gallery()
    s = tmp_path / "s"
    shutil.copytree(os.path.join(demo_root, "sop"), s)
    with open(s / "Ebay_test.txt", "a") as f:
        f.write("1 2 3\n")
    with pytest.raises(DataError, match=r"Ebay_test.txt:\d+: expected 4 fields"):
        build("SOP", str(s)).test()
    with pytest.raises(DataError, match="dataset root not found"):
        build("SOP", str(tmp_path / "nothing"))


def test_demo_is_deterministic_and_learnable(tmp_path):
    write_all(str(tmp_path / "a"), seed=0, sets=["sop"])
    write_all(str(tmp_path / "b"), seed=0, sets=["sop"])
    a = (tmp_path / "a" / "sop" / "bicycle_final" / "1_0.JPG").read_bytes()
    assert a == (tmp_path / "b" / "sop" / "bicycle_final" / "1_0.JPG").read_bytes()
    # same identity closer than different identities across views/cameras, in 16x16 pixel space
    def vec(i, v, cam):
        x = render_identity(i, v, (128, 64), "person", cam)[::8, ::4].astype(np.float32)
        return (x - x.mean()).ravel() / 255
    same = np.mean([np.linalg.norm(vec(i, 0, 0) - vec(i, 1, 3)) for i in range(20)])
    diff = np.mean([np.linalg.norm(vec(i, 0, 0) - vec(i + 1, 1, 3)) for i in range(20)])
    assert same < 0.8 * diff
