"""Face data: RecordIO (no mxnet), MS1M RecordIO source, verification .bin, demo faces."""
import io
import multiprocessing as mp
import os
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from ppufo.data.datasets.base import DATASETS, ImageDataset, build_source
from ppufo.data.datasets.face import (FaceVerificationBin, MS1MRecordIO, RestrictedUnpickler,
                                      load_verification_bin)
from ppufo.data.recordio import (IR_SIZE, MAGIC, IRHeader, RecordIOReader, RecordIOWriter, pack,
                                 read_index, rebuild_index, scan_offsets, unpack)
from ppufo.demo.face import (face_identity_seed, render_face, verification_pairs,
                             write_face_folder, write_ms1m_recordio, write_verification_bin)
from ppufo.utils.errors import DataError

MAGIC_B = struct.pack("<I", MAGIC)


def lrec(cflag, length):
    return struct.pack("<I", cflag << 29 | length)


def write_records(tmp_path, items, name="t"):
    rec, idx = str(tmp_path / f"{name}.rec"), str(tmp_path / f"{name}.idx")
    with RecordIOWriter(rec, idx) as w:
        for key, payload in items:
            w.write(key, payload)
    return rec, idx


# ----------------------------------------------------------------------------- RecordIO

def test_pack_layout_matches_mxnet():
    # mx.recordio.pack(IRHeader(0, 7.0, 5, 0), b"xy"): 'IfQQ' header then the bytes
    assert pack(IRHeader(0, 7.0, 5, 0), b"xy") == struct.pack("<IfQQ", 0, 7.0, 5, 0) + b"xy"
    # a label vector: flag = count, header label 0, labels before the image
    p = pack(IRHeader(0, [1.5, 2.0, -3.0], 9, 4), b"img")
    assert p[:IR_SIZE] == struct.pack("<IfQQ", 3, 0.0, 9, 4)
    assert np.frombuffer(p[IR_SIZE:IR_SIZE + 12], "<f4").tolist() == [1.5, 2.0, -3.0]
    h, img = unpack(p)
    assert (h.flag, h.id, h.id2, img) == (3, 9, 4, b"img")
    assert h.label.tolist() == [1.5, 2.0, -3.0]


def test_recordio_round_trip_exact_bytes(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(12):
        img = rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        label = float(k % 4) if k % 3 else [float(k), 1.0, 0.5]
        items.append((k * 3 + 1, IRHeader(0, label, k, 0), img))
    rec, idx = write_records(tmp_path, [(k, pack(h, b)) for k, h, b in items])
    # byte layout of the first record: magic, lrec(cflag 0, len), payload, zero pad
    raw = open(rec, "rb").read()
    p0 = pack(items[0][1], items[0][2])
    pad = (4 - len(p0) % 4) % 4
    assert raw[:8 + len(p0) + pad] == MAGIC_B + lrec(0, len(p0)) + p0 + b"\0" * pad
    assert len(raw) % 4 == 0
    # index: key<TAB>offset lines in write order
    lines = open(idx).read().splitlines()
    assert lines[0] == "1\t0" and len(lines) == 12
    r = RecordIOReader(rec, idx)
    assert r.keys.tolist() == [k for k, _, _ in items]
    for key, h, img in items:
        got, data = r.read(key)
        assert data == img
        assert got.id == h.id
        if np.ndim(h.label) == 0:
            assert got.flag == 0 and got.label == h.label
        else:
            assert got.flag == 3 and got.label.tolist() == list(h.label)
    # vectorised label reader agrees with per-record reads
    labels, flags = r.read_labels(r.keys, n=2)
    for (key, h, _), lab, fl in zip(items, labels, flags):
        first = h.label if np.ndim(h.label) == 0 else h.label[0]
        assert lab[0] == first
        assert fl == (0 if np.ndim(h.label) == 0 else 3)
        assert np.isnan(lab[1]) == (np.ndim(h.label) == 0)
    # sequential scan finds the same offsets; rebuild_index numbers records 0..n-1
    assert scan_offsets(rec) == r.offsets.tolist()
    new_idx = rebuild_index(rec, str(tmp_path / "re.idx"))
    keys, offs = read_index(new_idx)
    assert keys.tolist() == list(range(12)) and offs.tolist() == r.offsets.tolist()


def test_multipart_records_written_and_read_like_dmlc(tmp_path):
    # magic at aligned payload offsets 4 and 16 -> three parts; the one at 26 is unaligned
    payload = b"ABCD" + MAGIC_B + b"EFGHIJKL"[:4] + b"WXYZ" + MAGIC_B + b"tail!" + b"x" + MAGIC_B
    assert payload.index(MAGIC_B, 17) == 26  # unaligned: not a split point
    rec, idx = write_records(tmp_path, [(0, b"before"), (7, payload), (8, b"after")])
    raw = open(rec, "rb").read()
    start = 8 + 8  # record 0: 8 header + 6 bytes + 2 pad
    expect = (MAGIC_B + lrec(1, 4) + b"ABCD"
              + MAGIC_B + lrec(2, 8) + b"EFGHWXYZ"
              + MAGIC_B + lrec(3, 10) + b"tail!x" + MAGIC_B + b"\0\0")
    assert raw[start:start + len(expect)] == expect
    r = RecordIOReader(rec, idx)
    assert r.offset(7) == start
    assert r.read_raw(7) == payload
    assert r.read_raw(8) == b"after"
    assert scan_offsets(rec) == [0, start, start + len(expect)]


def test_hand_built_multipart_file_and_split_header(tmp_path):
    # written by hand, independent of our writer: one record in two parts
    rec = tmp_path / "h.rec"
    rec.write_bytes(MAGIC_B + lrec(1, 8) + b"12345678" + MAGIC_B + lrec(3, 3) + b"abc\0")
    (tmp_path / "h.idx").write_text("42\t0\n")
    assert RecordIOReader(str(rec)).read_raw(42) == b"12345678" + MAGIC_B + b"abc"
    # header id == magic: the split falls inside the IR header -> exact slow path
    p = pack(IRHeader(0, 17.0, MAGIC, 0), b"jpeg")
    r2, i2 = write_records(tmp_path, [(0, pack(IRHeader(0, 3.0, 0, 0), b"a")), (1, p)], "s")
    rd = RecordIOReader(r2, i2)
    assert open(r2, "rb").read()[rd.offset(1) + 7] >> 5 == 1  # cflag 1 in the top bits
    labels, _ = rd.read_labels([1, 0])
    assert labels[:, 0].tolist() == [17.0, 3.0]
    assert rd.read(1)[1] == b"jpeg"


def test_bad_magic_truncation_missing_key(tmp_path):
    rec, idx = write_records(tmp_path, [(k, pack(IRHeader(0, 1.0, k, 0), b"x" * 30))
                                        for k in range(4)])
    r = RecordIOReader(rec, idx)
    off2 = r.offset(2)
    data = bytearray(open(rec, "rb").read())
    data[off2] ^= 0xFF
    open(rec, "wb").write(bytes(data))
    with pytest.raises(DataError) as e:
        RecordIOReader(rec, idx).read(2)
    msg = str(e.value)
    assert "t.rec" in msg and "record 2" in msg and f"offset {off2}" in msg and "magic" in msg
    with pytest.raises(DataError, match=f"bad magic .* at offset {off2}"):
        scan_offsets(rec)
    # truncate inside the last record's payload
    off3 = r.offset(3)
    open(rec, "wb").write(bytes(data[:off3 + 20]))
    with pytest.raises(DataError) as e:
        RecordIOReader(rec, idx).read(3)
    msg = str(e.value)
    assert "truncated" in msg and "t.rec" in msg and f"offset {off3}" in msg
    # key not in the index
    with pytest.raises(DataError, match=r"key 99 is not in the index .*t\.idx"):
        RecordIOReader(rec, idx).read(99)
    # index pointing past the end of the file
    open(idx, "a").write(f"9\t{10 ** 6}\n")
    with pytest.raises(DataError, match=r"key 9 points to offset 1000000, past the end"):
        RecordIOReader(rec, idx)
    # malformed index line is named
    open(idx, "w").write("0\t0\n1 x\n")
    with pytest.raises(DataError, match=r"t\.idx: line 2"):
        RecordIOReader(rec, idx)
    open(idx, "w").write("0\t0\n0\t40\n")
    with pytest.raises(DataError, match="key 0 appears more than once"):
        read_index(idx)


_SHARED = {}


def _child_read(key):
    reader = _SHARED["reader"]  # inherited through fork, handle and all
    data = reader.read(key)[1]
    return os.getpid(), reader._pid, data


def test_reader_reopens_after_fork_and_pickles(tmp_path):
    items = [(k, pack(IRHeader(0, float(k), k, 0), bytes([k]) * (k + 5))) for k in range(6)]
    rec, idx = write_records(tmp_path, items)
    r = RecordIOReader(rec, idx)
    assert r.read(1)[1] == b"\x01" * 6  # opens in the parent
    parent_fd = r._fd
    clone = pickle.loads(pickle.dumps(r))
    assert clone._fd is None and clone.read(4)[1] == b"\x04" * 9
    _SHARED["reader"] = r
    try:
        with mp.get_context("fork").Pool(2) as pool:
            out = pool.map(_child_read, range(6))
    finally:
        _SHARED.clear()
    assert [b for _, _, b in out] == [bytes([k]) * (k + 5) for k in range(6)]
    assert all(pid != os.getpid() and opened_by == pid for pid, opened_by, _ in out)
    assert r._fd == parent_fd and r.read(5)[1] == b"\x05" * 10


# ----------------------------------------------------------------------------- MS1MRecordIO

@pytest.fixture(scope="module")
def ms1m(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ms1m"))
    info = write_ms1m_recordio(root, num_ids=6, imgs_per_id=4, seed=3)
    return root, info


def test_ms1m_demo_counts_labels_and_images(ms1m):
    root, info = ms1m
    assert info["num_images"] == 24 and info["num_ids"] == 6
    assert open(os.path.join(root, "property")).read().strip() == "6,112,112"
    ds = build_source({"name": "MS1MRecordIO", "root": os.path.basename(root)},
                      os.path.dirname(root))
    assert isinstance(ds, MS1MRecordIO) and ds.num_classes == 6 and ds.num_images == 24
    recs = ds.train()
    assert [r.key for r in recs] == list(range(1, 25))
    assert [r.pid for r in recs] == [k // 4 for k in range(24)]
    assert {r.camid for r in recs} == {0}
    assert ds.identity_ranges.tolist() == [[1 + 4 * j, 5 + 4 * j] for j in range(6)]
    img = ds.read(recs[5])
    assert img.mode == "RGB" and img.size == (112, 112)
    # the decoded image is the identity's face: close to a fresh render of (id 1, view 1)
    ref = render_face(face_identity_seed(3, 1), 1).astype(np.float32)
    other = render_face(face_identity_seed(3, 2), 1).astype(np.float32)
    got = np.asarray(img, np.float32)
    assert np.abs(got - ref).mean() < 10 and np.abs(got - other).mean() > 20
    # ImageDataset relabels and keeps counts
    d = ImageDataset([(ds, recs)])
    assert d.num_classes == 6 and len(d) == 24
    # label cache written next to the index and reused
    cache = os.path.join(root, "train.idx.labels.npy")
    assert np.load(cache).tolist() == [list(range(1, 25)), [k // 4 for k in range(24)]]


def test_ms1m_property_mismatch_and_missing(ms1m, tmp_path):
    root, _ = ms1m
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("train.rec", "train.idx"):
        (bad / f).write_bytes(open(os.path.join(root, f), "rb").read())
    (bad / "property").write_text("7,112,112\n")
    with pytest.raises(DataError) as e:
        MS1MRecordIO(str(bad))
    assert "7" in str(e.value) and "6" in str(e.value) and "property" in str(e.value)
    (bad / "property").write_text("seven\n")
    with pytest.raises(DataError, match="num_classes,height,width"):
        MS1MRecordIO(str(bad))
    os.remove(bad / "property")
    with pytest.raises(DataError, match="property file not found"):
        MS1MRecordIO(str(bad))


def test_ms1m_face2rec_order_multilabel_and_plain(tmp_path):
    # face2rec2 order: images 1..6 first (labels [label, aligned]), then meta record 0,
    # then identity records 7..9; the reader must go by the index, not file position
    root = tmp_path / "f2r"
    root.mkdir()
    labels = [0, 0, 1, 1, 1, 2]
    jpeg = io.BytesIO()
    Image.new("RGB", (112, 112), (9, 99, 199)).save(jpeg, format="PNG")
    items = [(k + 1, pack(IRHeader(0, [float(l), 1.0], k + 1, 0), jpeg.getvalue()))
             for k, l in enumerate(labels)]
    items.append((0, pack(IRHeader(0, [7.0, 10.0], 0, 0))))
    items += [(7, pack(IRHeader(0, [1.0, 3.0], 7, 0))), (8, pack(IRHeader(0, [3.0, 6.0], 8, 0))),
              (9, pack(IRHeader(0, [6.0, 7.0], 9, 0)))]
    write_records(root, items, "train")
    (root / "property").write_text("3,112,112")
    ds = MS1MRecordIO(str(root), label_cache=False)
    assert [(r.key, r.pid) for r in ds.train()] == list(zip(range(1, 7), labels))
    assert ds.read(ds.train()[0]).getpixel((5, 5)) == (9, 99, 199)
    assert not os.path.exists(root / "train.idx.labels.npy")
    # an identity record that disagrees with the image labels is reported
    items[-3] = (7, pack(IRHeader(0, [1.0, 4.0], 7, 0)))
    items[-2] = (8, pack(IRHeader(0, [4.0, 6.0], 8, 0)))
    write_records(root, items, "train")
    with pytest.raises(DataError, match=r"identity record 7 range \[1, 4\)"):
        MS1MRecordIO(str(root), label_cache=False)
    assert len(MS1MRecordIO(str(root), label_cache=False, check_identity_records=False).train()) == 6
    # plain image-only file: no meta header, every key is an image
    plain = tmp_path / "plain"
    plain.mkdir()
    write_records(plain, [(k, pack(IRHeader(0, float(k % 2), k, 0), jpeg.getvalue()))
                          for k in range(5)], "train")
    (plain / "property").write_text("2,112,112")
    ds = MS1MRecordIO(str(plain))
    assert [(r.key, r.pid) for r in ds.train()] == [(k, k % 2) for k in range(5)]
    assert ds.identity_ranges is None


def test_ms1m_bad_label_and_stale_cache(tmp_path):
    root = tmp_path / "lab"
    root.mkdir()
    write_records(root, [(0, pack(IRHeader(0, [2.0, 3.0], 0, 0))),
                         (1, pack(IRHeader(0, 0.0, 1, 0), b"x")),
                         (2, pack(IRHeader(0, 1.0, 2, 0), b"y"))], "train")
    (root / "property").write_text("2,112,112")
    # meta header [2, 3] says images 1..1 and identity record 2, which is an image: refused
    with pytest.raises(DataError, match="identity record 2"):
        MS1MRecordIO(str(root))
    write_records(root, [(k, pack(IRHeader(0, lab, k, 0), b"x"))
                         for k, lab in enumerate([0.0, 1.5, 1.0])], "train")
    with pytest.raises(DataError, match=r"image record 1 at offset \d+ has label 1\.5"):
        MS1MRecordIO(str(root))
    write_records(root, [(k, pack(IRHeader(0, lab, k, 0), b"x"))
                         for k, lab in enumerate([0.0, 1.0, 1.0])], "train")
    assert [r.pid for r in MS1MRecordIO(str(root)).train()] == [0, 1, 1]
    # rewrite with other labels: the cache is older than the .rec and must not be used
    cache = root / "train.idx.labels.npy"
    old = os.path.getmtime(cache)
    write_records(root, [(k, pack(IRHeader(0, lab, k, 0), b"x"))
                         for k, lab in enumerate([1.0, 0.0, 0.0])], "train")
    os.utime(cache, (old - 10, old - 10))
    assert [r.pid for r in MS1MRecordIO(str(root)).train()] == [1, 0, 0]


# ----------------------------------------------------------------------------- .bin

def test_verification_bin_round_trip(tmp_path):
    info = write_verification_bin(str(tmp_path / "lfw.bin"), num_pairs=20, seed=1)
    assert info["num_pairs"] == 20
    src = build_source({"name": "FaceVerificationBin", "root": str(tmp_path), "set_name": "lfw"},
                       "/unused")
    assert src.protocol == "verification"
    records, issame = src.pairs()
    assert len(records) == 40 and issame.dtype == np.bool_ and issame.sum() == 10
    assert [r.key for r in records] == list(range(40)) and {r.pid for r in records} == {-1}
    assert issame.tolist() == [p[4] for p in verification_pairs(20, 1)]
    for i in (0, 1):  # both folds of 10 pairs hold same and different pairs
        assert issame[i * 10:(i + 1) * 10].sum() == 5
    # images decode to the rendered faces of the pair list
    pairs = verification_pairs(20, 1)
    img = np.asarray(src.read(records[3]), np.float32)
    ia, va, ib, vb, _ = pairs[1]
    assert np.abs(img - render_face(ib, vb)).mean() < 10
    # raw content equals what was pickled
    bins, same = pickle.load(open(tmp_path / "lfw.bin", "rb"))
    assert len(bins) == 40 and same == issame.tolist()
    with pytest.raises(DataError, match=r"lfw\.bin: image index 40 out of range"):
        src.read(records[0]._replace(key=40))
    with pytest.raises(DataError, match=r"cfp_fp\.bin not found.*\['lfw'\]"):
        FaceVerificationBin(str(tmp_path), set_name="cfp_fp")


def test_verification_bin_python2_numpy_style(tmp_path):
    # insightface bins written by numpy/py2 tools: images as uint8 arrays, np.bool_ flags
    imgs = []
    for c in range(4):
        b = io.BytesIO()
        Image.new("RGB", (8, 8), (c * 60, 0, 0)).save(b, format="PNG")
        imgs.append(np.frombuffer(b.getvalue(), np.uint8))
    path = tmp_path / "agedb_30.bin"
    with open(path, "wb") as fh:
        pickle.dump((imgs, [np.bool_(True), np.bool_(False)]), fh, protocol=2)
    images, issame = load_verification_bin(str(path))
    assert issame.tolist() == [True, False]
    assert images[2] == imgs[2].tobytes()
    src = FaceVerificationBin(str(tmp_path), set_name="agedb_30")
    assert src.read(src.pairs()[0][3]).getpixel((1, 1)) == (180, 0, 0)


def test_verification_bin_pair_count_mismatch(tmp_path):
    with open(tmp_path / "lfw.bin", "wb") as fh:
        pickle.dump(([b"a", b"b", b"c"], [True, False]), fh, protocol=4)
    with pytest.raises(DataError) as e:
        FaceVerificationBin(str(tmp_path)).pairs()
    msg = str(e.value)
    assert "lfw.bin" in msg and "3 images" in msg and "2 pairs" in msg
    with open(tmp_path / "lfw.bin", "wb") as fh:
        pickle.dump(([b"a", b"b"], ["yes"]), fh)
    with pytest.raises(DataError, match=r"issame\[0\] is 'yes'"):
        FaceVerificationBin(str(tmp_path)).pairs()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    for i, payload in enumerate([([_Evil(marker), b"x"], [True]),
                                 ([b"x", b"y"], [_EvilEval()])]):
        path = tmp_path / f"evil{i}.bin"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(DataError) as e:
            FaceVerificationBin(str(tmp_path), set_name=f"evil{i}").pairs()
        msg = str(e.value)
        assert f"evil{i}.bin" in msg and "refused" in msg
        assert ("system" in msg) if i == 0 else ("eval" in msg)
    assert not marker.exists()
    # numpy is allowed only for plain arrays: an object array is refused
    path = tmp_path / "obj.bin"
    path.write_bytes(pickle.dumps(([np.array([b"a", 1], dtype=object)], []), protocol=2))
    with pytest.raises(DataError, match="refused"):
        load_verification_bin(str(path))
    # the unpickler itself refuses any other global
    with pytest.raises(pickle.UnpicklingError, match="builtins.getattr"):
        RestrictedUnpickler(io.BytesIO(b"\x80\x02cbuiltins\ngetattr\n.")).load()
    assert {"MS1MRecordIO", "FaceVerificationBin"} <= set(DATASETS.names())


# ----------------------------------------------------------------------------- demo faces

def test_render_face_deterministic_and_view_dependent():
    a = render_face(face_identity_seed(0, 5), 2)
    assert a.shape == (112, 112, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_face(face_identity_seed(0, 5), 2))
    assert not np.array_equal(a, render_face(face_identity_seed(0, 5), 3))
    assert render_face(7, 1, size=64).shape == (64, 64, 3)
    assert a.std() > 20  # not a blank image


def test_demo_faces_are_learnable():
    """Same identity is closer than different identities in 16x16 pixel space."""
    n_ids, n_views = 12, 4
    feats, ids = [], []
    for i in range(n_ids):
        for v in range(n_views):
            im = Image.fromarray(render_face(face_identity_seed(0, i), v)).resize((16, 16),
                                                                                   Image.BILINEAR)
            x = np.asarray(im, np.float32).ravel()
            feats.append((x - x.mean()) / x.std())
            ids.append(i)
    x, ids = np.stack(feats), np.asarray(ids)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    same = (ids[:, None] == ids[None]) & ~np.eye(len(ids), dtype=bool)
    diff = ids[:, None] != ids[None]
    assert d[same].mean() < 0.8 * d[diff].mean()
    np.fill_diagonal(d, np.inf)
    assert (ids[d.argmin(1)] == ids).mean() > 3.0 / n_ids  # far above chance (1/12)


def test_demo_identity_seeds_disjoint_and_face_folder(tmp_path):
    train = {face_identity_seed(0, j) for j in range(1000)}
    test = {s for p in verification_pairs(200, 0) for s in (p[0], p[2])}
    assert not train & test
    pairs = verification_pairs(200, 0)
    assert sum(p[4] for p in pairs) == 100
    assert all((p[0] == p[2]) == p[4] for p in pairs)
    info = write_face_folder(str(tmp_path / "ff"), num_ids=3, imgs_per_id=2, seed=0)
    assert info["num_images"] == 6
    assert sorted(os.listdir(tmp_path / "ff")) == ["0", "1", "2"]
    assert sorted(os.listdir(tmp_path / "ff" / "2")) == ["0.jpg", "1.jpg"]
    with Image.open(tmp_path / "ff" / "1" / "0.jpg") as im:
        assert im.size == (112, 112)
