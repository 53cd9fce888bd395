"""GalleryIndex grows and shrinks by id, under every index type: what is added is found, what is
removed is never returned, ids survive save/load, a save is atomic, concurrent use is safe."""
import json
import os
import threading

import numpy as np
import pytest

from ppufo.inference import gallery_files
from ppufo.inference.gallery import GalleryIndex, GalleryWouldBeEmpty, NotInGallery
from ppufo.inference.gallery_files import GalleryChanged
from ppufo.inference.search_index import IndexSettings
from ppufo.utils.rwlock import ReadWriteLock

KINDS = ["flat", "ivf", "hnsw"]


def clustered(n_ids=40, per_id=25, dim=32, noise=0.3, seed=0):
    """(features, labels, centres): ``per_id`` L2-normalised draws around each of ``n_ids`` centres."""
    rs = np.random.RandomState(seed)
    centres = rs.randn(n_ids, dim).astype(np.float32)
    labels = np.repeat(np.arange(n_ids), per_id)
    x = centres[labels] + noise * rs.randn(len(labels), dim).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), [f"id{v}" for v in labels], centres


def build(kind, feats, labels, **settings):
    return GalleryIndex(feats, labels, [f"{i}.jpg" for i in range(len(labels))],
                        settings=IndexSettings(index_type=kind, **settings))


def unit(v):
    v = np.asarray(v, np.float32).reshape(1, -1)
    return v / np.linalg.norm(v)


def test_auto_is_flat_below_the_threshold_and_ivf_from_it():
    s = IndexSettings(auto_flat_below=100)
    assert (s.kind_for(99), s.kind_for(100), IndexSettings(index_type="hnsw").kind_for(5)) == ("flat", "ivf", "hnsw")
    feats, labels, _ = clustered(n_ids=4, per_id=25)
    assert build("auto", feats, labels, auto_flat_below=101).kind == "flat"
    assert build("auto", feats, labels, auto_flat_below=100).kind == "ivf"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_each_index_type_ranks_first_what_flat_ranks_first(kind):
    feats, labels, centres = clustered()
    rs = np.random.RandomState(1)
    queries = centres[rs.randint(0, len(centres), 200)] + 0.3 * rs.randn(200, centres.shape[1]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = build("flat", feats, labels).search(queries, 5)
    other = build(kind, feats, labels, nprobe=4).search(queries, 5)  # IVF: 4 of its 25 lists
    assert [r[0]["id"] for r in other] == [r[0]["id"] for r in flat]
    assert [r[0]["label"] for r in other] == [r[0]["label"] for r in flat]
    assert np.allclose([r[0]["score"] for r in other], [r[0]["score"] for r in flat], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_an_added_item_is_found_first_and_a_removed_one_never(kind):
    feats, labels, centres = clustered()
    index = build(kind, feats, labels)
    new = unit(np.random.RandomState(5).randn(32))
    ids = index.add(new, ["newcomer"], ["new.jpg"])
    assert ids == [len(labels)] and len(index) == len(labels) + 1
    top = index.search(new, 3)[0][0]
    assert (top["id"], top["label"], top["path"]) == (ids[0], "newcomer", "new.jpg") and top["score"] > 0.999

    index.remove(ids=ids)
    assert all(h["id"] != ids[0] and h["label"] != "newcomer" for h in index.search(new, len(index))[0])
    victims = [i for i, label in zip(index.ids, index.labels) if label == "id3"]
    assert index.remove(labels=["id3"]) == victims and len(victims) == 25
    hits = index.search(unit(centres[3]), 50)[0]
    assert len(hits) == 50 and not {h["label"] for h in hits} & {"id3", "newcomer"}
    again = index.add(new, ["again"], ["again.jpg"])
    assert again == [len(labels) + 1]  # an id is never reused, not even a removed one's
    assert index.search(new, 1)[0][0]["id"] == again[0]


def test_ids_must_be_distinct_and_not_negative():
    with pytest.raises(ValueError, match=r"expected 2 distinct ids >= 0 .*got 2 \(1 distinct"):
        GalleryIndex(np.eye(2, dtype=np.float32), ["a", "b"], ["a", "b"], ids=[4, 4])
    with pytest.raises(ValueError, match=r"smallest -1"):
        GalleryIndex(np.eye(2, dtype=np.float32), ["a", "b"], ["a", "b"], ids=[-1, 4])


def test_remove_is_all_or_nothing():
    feats, labels, _ = clustered(n_ids=2, per_id=3)
    index = build("flat", feats, labels)
    with pytest.raises(NotInGallery, match=r"no gallery item with id 99; no gallery item with label 'x' \(nothing"):
        index.remove(ids=[0, 99], labels=["id0", "x"])
    with pytest.raises(GalleryWouldBeEmpty, match="removing 6 items would leave the gallery empty"):
        index.remove(labels=["id0", "id1"])
    assert len(index) == 6 and index.search(feats[:1], 1)[0][0]["id"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_ids_labels_and_answers_survive_save_and_load(kind, tmp_path):
    feats, labels, _ = clustered()
    index = build(kind, feats, labels)
    index.remove(ids=[0, 7, 500])
    index.add(feats[:2] * -1, ["flipped0", "flipped1"], ["f0.jpg", "f1.jpg"])
    index.save(str(tmp_path))
    loaded = GalleryIndex.load(str(tmp_path), IndexSettings(index_type=kind))
    assert (loaded.ids, loaded.labels, loaded.paths) == (index.ids, index.labels, index.paths)
    assert loaded.ids[-2:] == [1000, 1001] and 0 not in loaded.ids and loaded.next_id == 1002
    queries = np.concatenate([feats[1:40:3], -feats[:2]])
    assert [[h["id"] for h in r] for r in loaded.search(queries, 3)] == \
        [[h["id"] for h in r] for r in index.search(queries, 3)]
    meta = json.loads((tmp_path / "gallery.json").read_text())
    assert (meta["format"], meta["dim"], meta["index"]["index_type"]) == (2, 32, kind)
    assert loaded.add(feats[:1], ["x"], ["x.jpg"]) == [1002]


def test_a_gallery_saved_before_ids_loads_with_ids_in_row_order(tmp_path):
    feats = np.eye(3, dtype=np.float32)
    np.save(tmp_path / "features.npy", feats)
    (tmp_path / "gallery.json").write_text(json.dumps({"labels": ["a", "b", "c"], "paths": ["a", "b", "c"]}))
    old = GalleryIndex.load(str(tmp_path))
    assert old.ids == [0, 1, 2] and old.next_id == 3 and old.revision == 0
    assert [(h["id"], h["label"]) for h in old.search(np.array([[0.2, 1, 0.5]]), 3)[0]] == [(1, "b"), (2, "c"), (0, "a")]
    old.add(feats[:1], ["d"], ["d"])
    old.save(str(tmp_path))  # the new format beside it, the old features file gone
    assert sorted(os.listdir(tmp_path)) == ["features.1.npy", "gallery.json"]
    assert GalleryIndex.load(str(tmp_path)).ids == [0, 1, 2, 3]


def test_a_save_is_committed_by_one_rename(tmp_path, monkeypatch):
    feats, labels, _ = clustered(n_ids=2, per_id=3)
    index = build("flat", feats, labels)
    index.save(str(tmp_path))
    index = GalleryIndex.load(str(tmp_path))
    index.add(feats[:1], ["extra"], ["extra.jpg"])
    real_replace = os.replace

    def crash_before_the_commit(src, dst):
        if dst.endswith("gallery.json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)
    monkeypatch.setattr(gallery_files.os, "replace", crash_before_the_commit)
    with pytest.raises(OSError, match="No space left"):
        index.save(str(tmp_path))
    monkeypatch.undo()
    before = GalleryIndex.load(str(tmp_path))  # the old pair, whole
    assert len(before) == 6 and "extra" not in before.labels
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    index.save(str(tmp_path))  # the retry goes through
    assert GalleryIndex.load(str(tmp_path)).labels[-1] == "extra"


def test_a_save_over_another_writers_save_is_refused(tmp_path):
    feats, labels, _ = clustered(n_ids=2, per_id=3)
    build("flat", feats, labels).save(str(tmp_path))
    a, b = GalleryIndex.load(str(tmp_path)), GalleryIndex.load(str(tmp_path))
    a.add(feats[:1], ["from a"], ["a.jpg"])
    a.save(str(tmp_path))
    b.add(feats[:1], ["from b"], ["b.jpg"])
    with pytest.raises(GalleryChanged, match=r"saved by another writer .*now revision 2, this copy is of revision 1"):
        b.save(str(tmp_path))
    assert GalleryIndex.load(str(tmp_path)).labels[-1] == "from a"
    build("flat", feats, labels).save(str(tmp_path))  # a new build replaces whatever is there
    assert len(GalleryIndex.load(str(tmp_path))) == 6


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_adds_removes_and_searches_stay_consistent(kind):
    feats, labels, _ = clustered(n_ids=10, per_id=20)
    index = build(kind, feats, labels)
    rs = np.random.RandomState(3)
    extra = rs.randn(120, 32).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    errors, stop = [], threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                for row in index.search(extra[rs.randint(0, 120, 4)], 5):
                    for h in row:  # the label and path always belong to the id returned
                        assert h["path"] == f"{h['id']}.jpg" or h["path"] == f"extra{h['label'][5:]}.jpg", h
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    added = []
    for i in range(0, 120, 4):
        added += index.add(extra[i:i + 4], [f"extra{j}" for j in range(i, i + 4)], [f"extra{j}.jpg" for j in range(i, i + 4)])
        if i % 20 == 0:
            index.remove(ids=[added[-4]])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert added == list(range(200, 320)) and len(index) == 200 + 120 - 6
    top = [r[0]["id"] for r in index.search(extra, 1)]
    removed = set(added[::20])
    assert [t for t, a in zip(top, added) if a not in removed] == [a for a in added if a not in removed]
    assert not removed & set(top)


def test_readers_share_the_lock_and_a_writer_waits_for_them():
    lock, inside, order = ReadWriteLock(), threading.Barrier(2, timeout=5), []

    def reader():
        with lock.read():
            inside.wait()  # both readers are in at once, or this times out
            order.append("read")
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for r in readers:
        r.start()
    for r in readers:
        r.join()
    with lock.write():
        order.append("write")
    assert order == ["read", "read", "write"]
