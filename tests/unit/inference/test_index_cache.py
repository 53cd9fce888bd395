"""The trained IVF / HNSW index saved beside a gallery (ppufo/inference/index_cache.py): used when it
matches the gallery and the settings, otherwise rebuilt; never trusted when altered."""
import hashlib
import json

import faiss
import numpy as np
import pytest

from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.search_index import IndexSettings

from test_gallery_index import build, clustered

SETTINGS = {"ivf": {"nlist": 10, "nprobe": 3}, "hnsw": {"hnsw_m": 8, "ef_search": 16}}


def refuse_builds(monkeypatch):
    """From now on building a faiss index fails: only a load from the cache can succeed."""
    def refuse(*args, **kwargs):
        raise AssertionError("built an index")
    monkeypatch.setattr(faiss, "index_factory", refuse)
    monkeypatch.setattr(faiss, "IndexFlatIP", refuse)


def settings(kind, **changes):
    return IndexSettings(**{"index_type": kind, **SETTINGS[kind], **changes})


def saved(kind, tmp_path):
    feats, labels, _ = clustered()
    index = build(kind, feats, labels, **SETTINGS[kind])
    index.save(str(tmp_path))
    return index, feats


def queries(n=50, seed=3):
    q = np.random.RandomState(seed).randn(n, 32).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def meta(tmp_path):
    return json.loads((tmp_path / "gallery.json").read_text())


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_a_saved_index_is_loaded_without_building_and_answers_as_the_built_one(kind, tmp_path, monkeypatch):
    built, feats = saved(kind, tmp_path)
    assert meta(tmp_path)["index_cache"]["file"] == "index.faiss" and (tmp_path / "index.faiss").is_file()
    refuse_builds(monkeypatch)
    cached = GalleryIndex.load(str(tmp_path), settings(kind))
    assert cached.from_cache and cached.kind == kind
    assert cached.search(queries(), 5) == built.search(queries(), 5)
    other_knobs = GalleryIndex.load(str(tmp_path), settings(kind, nprobe=10, ef_search=200))  # search-time only
    assert other_knobs.from_cache
    if kind == "ivf":  # all 10 lists probed: exact
        assert [r[0]["id"] for r in other_knobs.search(queries(), 1)] == list(np.argmax(queries() @ feats.T, 1))


def test_a_flat_gallery_saves_no_index(tmp_path):
    saved("ivf", tmp_path)
    feats, labels, _ = clustered()
    GalleryIndex.load(str(tmp_path), settings("ivf"), exact=False).save(str(tmp_path))
    assert (tmp_path / "index.1.faiss").is_file() and not (tmp_path / "index.faiss").exists()
    build("flat", feats, labels).save(str(tmp_path))
    assert "index_cache" not in meta(tmp_path) and not list(tmp_path.glob("*.faiss"))


@pytest.mark.parametrize("kind, changes", [("ivf", {"nlist": 12}), ("ivf", {"nlist": None}), ("hnsw", {"hnsw_m": 16}),
                                           ("ivf", {"index_type": "hnsw"})])
def test_other_index_settings_rebuild(kind, changes, tmp_path, monkeypatch):
    saved(kind, tmp_path)
    refuse_builds(monkeypatch)
    assert GalleryIndex.load(str(tmp_path), settings(kind)).from_cache
    with pytest.raises(AssertionError, match="built an index"):
        GalleryIndex.load(str(tmp_path), settings(kind, **changes))


def test_changed_features_or_ids_rebuild_and_answer_for_the_gallery_as_it_is(tmp_path, ppufo_log):
    _, feats = saved("ivf", tmp_path)
    m = meta(tmp_path)
    np.save(tmp_path / m["features"], feats[::-1].copy())  # same rows, other order: other ids per feature
    index = GalleryIndex.load(str(tmp_path), settings("ivf"))
    assert not index.from_cache and "the saved index is for other settings or items" in " ".join(ppufo_log)
    np.save(tmp_path / m["features"], feats)
    assert GalleryIndex.load(str(tmp_path), settings("ivf")).from_cache
    m["ids"] = [i + 1000 for i in m["ids"]]
    m["next_id"] += 1000
    (tmp_path / "gallery.json").write_text(json.dumps(m))
    index = GalleryIndex.load(str(tmp_path), settings("ivf"))
    assert not index.from_cache and index.search(feats[:1], 1)[0][0]["id"] == 1000


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "checksum differs"),
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_bytes(b"not faiss" * 50), "not a readable faiss index"),
])
def test_a_damaged_cache_is_named_in_a_warning_and_rebuilt(damage, message, tmp_path, ppufo_log):
    built, _ = saved("ivf", tmp_path)
    path = tmp_path / "index.faiss"
    damage(path)
    if message == "not a readable faiss index":  # the checksum recorded for it: only faiss can refuse it
        m = meta(tmp_path)
        m["index_cache"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (tmp_path / "gallery.json").write_text(json.dumps(m))
    index = GalleryIndex.load(str(tmp_path), settings("ivf"))
    assert not index.from_cache
    assert any(str(path) in line and message in line for line in ppufo_log), ppufo_log
    assert [r[0]["id"] for r in index.search(queries(), 1)] == [r[0]["id"] for r in built.search(queries(), 1)]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_adds_and_removes_saved_keep_the_cache_matching_the_gallery(kind, tmp_path):
    feats, labels, _ = clustered()
    saved(kind, tmp_path)
    served = GalleryIndex.load(str(tmp_path), settings(kind))
    (new,) = served.add(feats[:1] * -1, ["new"], ["new.jpg"])
    served.save(str(tmp_path))
    again = GalleryIndex.load(str(tmp_path), settings(kind))
    assert again.from_cache and len(again) == len(labels) + 1
    assert again.search(-feats[:1], 1)[0][0]["id"] == new
    served.remove([new])
    served.save(str(tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())
    if kind == "hnsw":  # a removed vector stays in the graph, masked: such an index is not saved
        assert "index_cache" not in meta(tmp_path) and not [f for f in files if f.endswith(".faiss")]
    else:
        assert meta(tmp_path)["index_cache"]["file"] in files and len([f for f in files if f.endswith(".faiss")]) == 1
    final = GalleryIndex.load(str(tmp_path), settings(kind))
    assert final.from_cache == (kind == "ivf") and new not in final.ids
    assert final.search(queries(), 5) == served.search(queries(), 5)


def test_an_edit_only_load_keeps_the_saved_index_for_the_next_reader(tmp_path, monkeypatch):
    """ppufo-predict --append_index / --remove_* load exact: the saved IVF, whatever the reader's settings."""
    feats, labels, _ = clustered()
    saved("ivf", tmp_path)
    refuse_builds(monkeypatch)
    edit = GalleryIndex.load(str(tmp_path), IndexSettings(), exact=True)
    assert edit.from_cache and edit.kind == "ivf"
    edit.add(-feats[:2], ["x", "y"], ["x.jpg", "y.jpg"])
    edit.remove(labels=[labels[0]])
    edit.save(str(tmp_path))
    assert meta(tmp_path)["index_cache"]["spec"]["nlist"] == SETTINGS["ivf"]["nlist"]  # the saved index's, kept
    reader = GalleryIndex.load(str(tmp_path), settings("ivf"))
    assert reader.from_cache and reader.search(-feats[:1], 1)[0][0]["label"] == "x"
    assert labels[0] not in reader.labels


def test_changes_saved_by_the_service_leave_a_saved_index_that_matches(server, tmp_path, monkeypatch):
    """POST /gallery/add and /gallery/remove with --save_gallery_updates: the next load takes the saved
    IVF, which holds exactly the saved items (the stand-in model's feature is the mean colour)."""
    from PIL import Image
    from serving_fakes import encode, post
    rs = np.random.RandomState(0)
    feats = np.abs(rs.randn(80, 3)).astype(np.float32)
    ivf = IndexSettings(index_type="ivf", nlist=2, nprobe=2)
    GalleryIndex(feats / np.linalg.norm(feats, axis=1, keepdims=True), [f"g{i}" for i in range(80)],
                 [""] * 80, settings=ivf).save(str(tmp_path))
    served = GalleryIndex.load(str(tmp_path), ivf)
    assert served.from_cache
    srv = server(index=served, allow_updates=True, save_dir=str(tmp_path))
    yellow = encode(Image.new("RGB", (20, 20), (200, 200, 10)))
    status, body = post(srv.port, yellow, "/gallery/add?label=yellow")
    assert status == 200 and body["saved"] is True
    assert post(srv.port, b"", "/gallery/remove?id=0&id=1")[0] == 200
    refuse_builds(monkeypatch)
    again = GalleryIndex.load(str(tmp_path), ivf)
    assert again.from_cache and len(again) == 79 and {0, 1}.isdisjoint(again.ids)
    assert again.search(queries(20)[:, :3], 5) == served.search(queries(20)[:, :3], 5)
    assert again.labels[-1] == "yellow" and again.search(np.array([[1, 1, 0.05]], np.float32), 1)[0][0]["id"] == body["id"]
