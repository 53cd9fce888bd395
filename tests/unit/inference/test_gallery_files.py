"""A gallery whose files disagree, and index keys out of range, are refused with an error naming the
file or the key and what was expected."""
import json

import numpy as np
import pytest

from ppufo.inference.deploy_config import load_deploy_config
from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.search_index import IndexSettings
from ppufo.utils.errors import ConfigError, DataError


@pytest.fixture
def saved(tmp_path):
    """A saved 3-item, 4-d gallery: (folder, its gallery.json as a dict)."""
    GalleryIndex(np.eye(3, 4, dtype=np.float32), ["a", "b", "c"], ["a.jpg", "b.jpg", "c.jpg"]).save(str(tmp_path))
    return tmp_path, json.loads((tmp_path / "gallery.json").read_text())


def edit_meta(folder, meta, **changes):
    (folder / "gallery.json").write_text(json.dumps({**meta, **changes}))


BAD_META = [
    (dict(ids=[0, 0, 2]), r"gallery.json: id 0 is listed twice \(items 0 and 1\)"),
    (dict(ids=[0, 1]), r"gallery.json: 2 ids for 3 labels; expected one id per item"),
    (dict(ids=[0, -1, 2]), r"gallery.json: 'ids' must be a list of integers >= 0"),
    (dict(next_id=2), r"gallery.json: 'next_id' must be an integer above every id \(max 2\), got 2"),
    (dict(labels=["a", 5, "c"]), r"gallery.json: 'labels' must hold strings; item 1 is 5"),
    (dict(paths="a.jpg"), r"gallery.json: 'paths' must be a list of strings, got str"),
    (dict(labels=["a", "b"]), r"features.npy has 3 feature rows but .*gallery.json lists 2 labels and 3 paths"),
    (dict(dim=8), r"features.npy: features have dimension 4, .*gallery.json says 8"),
    (dict(features="../elsewhere.npy"), r"gallery.json: 'features' must be one of \['features.npy', 'features.1.npy'\]"),
    (dict(features="features.1.npy"), r"features.1.npy not found, though .*gallery.json names it"),
    (dict(format=3), r"gallery.json: format 3 is not one this ppufo reads"),
]


@pytest.mark.parametrize("changes, message", BAD_META)
def test_a_gallery_json_that_disagrees_is_refused_naming_it(saved, changes, message):
    folder, meta = saved
    edit_meta(folder, meta, **changes)
    with pytest.raises((DataError, FileNotFoundError), match=message):
        GalleryIndex.load(str(folder))


@pytest.mark.parametrize("features, message", [
    (np.eye(4, 4, dtype=np.float32), r"features.npy has 4 feature rows but .*gallery.json lists 3 labels"),
    (np.array([[1, np.inf, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32),
     r"features.npy: 1 of 3 gallery features are not finite .*\['a.jpg'\]"),
    (np.array([{"a": 1}, None, 3], dtype=object), r"features.npy: not a numeric .npy array"),
])
def test_a_features_file_that_disagrees_is_refused_naming_it(saved, features, message):
    folder, _ = saved
    np.save(folder / "features.npy", features, allow_pickle=True)
    with pytest.raises(ValueError, match=message):
        GalleryIndex.load(str(folder))


def test_a_gallery_json_that_is_not_json_or_missing_is_named(saved):
    folder, _ = saved
    (folder / "gallery.json").write_text("{labels: [a, b")
    with pytest.raises(DataError, match=r"gallery.json: not a readable JSON file"):
        GalleryIndex.load(str(folder))
    (folder / "gallery.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"gallery.json not found \(build the index with"):
        GalleryIndex.load(str(folder))


def test_an_ivf_with_more_lists_than_items_names_the_key():
    with pytest.raises(ValueError, match=r"IndexProcess.nlist=50: .*needs at least 50 gallery items, the gallery has 10"):
        GalleryIndex(np.eye(10, dtype=np.float32), list("abcdefghij"), list("abcdefghij"),
                     settings=IndexSettings(index_type="ivf", nlist=50))


@pytest.mark.parametrize("overrides, message", [
    (["IndexProcess.index_type=annoy"], r"IndexProcess.index_type: 'annoy' is not one of \['auto', 'flat', 'ivf'"),
    (["IndexProcess.nprobe=0"], r"IndexProcess.nprobe: 0 is out of range; allowed: >= 1"),
    (["IndexProcess.hnsw_m=1"], r"IndexProcess.hnsw_m: 1 is out of range; allowed: \[2, 256\]"),
    (["IndexProcess.ef_search=many"], r"IndexProcess.ef_search: expected int, got str"),
    (["IndexProcess.nlist=8", "IndexProcess.nprobe=16"], r"IndexProcess.nprobe: expected at most nlist \(8\), got 16"),
    (["IndexProcess.auto_flat_below=0"], r"IndexProcess.auto_flat_below: 0 is out of range"),
    (["IndexProcess.index_operation=update"], r"IndexProcess.index_operation: 'update' is not one of"),
    (["IndexProcess.index_operation=append"], r"index_operation: append needs IndexProcess.data_file"),
    (["IndexProcess.index_operation=remove"], r"index_operation: remove needs IndexProcess.remove_ids and/or"),
    (["IndexProcess.index_operation=remove", "IndexProcess.remove_ids=[1]", "IndexProcess.data_file=g"],
     r"IndexProcess.data_file: not read by index_operation remove"),
    (["IndexProcess.remove_ids=[-1]", "IndexProcess.index_operation=remove"], r"IndexProcess.remove_ids.0: -1 is out"),
    (["IndexProcess.remove_labels=[a]"], r"IndexProcess.remove_labels: only read with index_operation: remove, not new"),
])
def test_bad_index_keys_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_deploy_config(None, overrides)


def test_index_keys_reach_the_settings():
    cfg = load_deploy_config(None, ["IndexProcess.index_type=hnsw", "IndexProcess.ef_search=100"])
    s = IndexSettings.from_config(cfg["IndexProcess"])
    assert (s.index_type, s.ef_search, s.nprobe, s.auto_flat_below, s.kind_for(3)) == ("hnsw", 100, 32, 100_000, "hnsw")
