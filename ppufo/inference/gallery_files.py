"""A gallery on disk: ``gallery.json`` (ids, labels, paths, index settings) and the features file it
names (a plain .npy, read without pickle). These two are the gallery; a trained IVF / HNSW index
may be saved beside them (index_cache.py), used on load only if it matches them exactly.

A save writes the features under the name the current gallery.json does not use (features.npy and
features.1.npy alternate), then replaces gallery.json: that one rename is the commit, so a reader
or a crash sees the old pair or the new one, never a mix. ``revision`` counts saves; a save from a
copy loaded at another revision is refused (another writer saved in between).
"""
import fcntl
import json
import os
import re
from contextlib import contextmanager

import numpy as np

from ..utils.errors import DataError
from ..utils.pointer import fsync_dir, replace_file
from . import index_cache

META = "gallery.json"
FEATURE_FILES = ("features.npy", "features.1.npy")
FORMAT = 2  # 1 (no "format" key): {"labels", "paths"} beside features.npy, ids 0..n-1


class GalleryChanged(RuntimeError):
    """gallery.json was saved by another writer since this copy was loaded."""


def _read_json(meta):
    try:
        with open(meta, encoding="utf-8") as f:
            m = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{meta}: not a readable JSON file ({e}); expected the gallery.json "
                        f"ppufo-predict --build_index writes") from None
    if not isinstance(m, dict):
        raise DataError(f"{meta}: expected a JSON object with ids, labels and paths, got {type(m).__name__}")
    fmt = m.get("format", 1)
    if fmt not in (1, FORMAT):
        raise DataError(f"{meta}: format {fmt!r} is not one this ppufo reads (1 or {FORMAT}); a newer ppufo wrote it?")
    return m


def _strings(m, key, meta):
    values = m.get(key)
    if not isinstance(values, list):
        raise DataError(f"{meta}: '{key}' must be a list of strings, got {type(values).__name__}")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise DataError(f"{meta}: '{key}' must hold strings; item {bad[0]} is {values[bad[0]]!r}")
    return values


def _ids(m, n, meta):
    if "ids" not in m:  # format 1
        return list(range(n)), n
    ids, next_id = m["ids"], m.get("next_id")
    if not isinstance(ids, list) or any(type(i) is not int or i < 0 for i in ids):
        raise DataError(f"{meta}: 'ids' must be a list of integers >= 0")
    seen = {}
    for pos, i in enumerate(ids):
        if i in seen:
            raise DataError(f"{meta}: id {i} is listed twice (items {seen[i]} and {pos}); ids must be unique")
        seen[i] = pos
    if type(next_id) is not int or (ids and next_id <= max(ids)):
        raise DataError(f"{meta}: 'next_id' must be an integer above every id (max {max(ids, default=-1)}), "
                        f"got {next_id!r}")
    return ids, next_id


def read_gallery(index_dir):
    """The saved gallery as a dict: features, ids, labels, paths, next_id, revision, settings, and
    ``where`` (the features file, for errors). Files that disagree are a DataError naming the file
    and what was expected."""
    meta = os.path.join(index_dir, META)
    if not os.path.isfile(meta):
        raise FileNotFoundError(f"{meta} not found (build the index with ppufo-predict --build_index)")
    m = _read_json(meta)
    labels, paths = _strings(m, "labels", meta), _strings(m, "paths", meta)
    name = m.get("features", FEATURE_FILES[0])
    if name not in FEATURE_FILES:
        raise DataError(f"{meta}: 'features' must be one of {list(FEATURE_FILES)}, got {name!r}")
    feats = os.path.join(index_dir, name)
    if not os.path.isfile(feats):
        raise FileNotFoundError(f"{feats} not found, though {meta} names it (build the index with "
                                f"ppufo-predict --build_index)")
    try:
        features = np.load(feats, allow_pickle=False)
    except ValueError as e:  # a pickled (object) array, or not a .npy file
        raise DataError(f"{feats}: not a numeric .npy array ({e}); rebuild the index") from None
    rows = len(features) if features.ndim else 0
    if rows != len(labels) or len(labels) != len(paths):
        raise DataError(f"{feats} has {rows} feature rows but {meta} lists {len(labels)} labels and "
                        f"{len(paths)} paths; expected one of each per row (rebuild the index)")
    dim = m.get("dim")
    if dim is not None and features.ndim == 2 and features.shape[1] != dim:
        raise DataError(f"{feats}: features have dimension {features.shape[1]}, {meta} says {dim}")
    ids, next_id = _ids(m, len(labels), meta)
    if len(ids) != len(labels):
        raise DataError(f"{meta}: {len(ids)} ids for {len(labels)} labels; expected one id per item")
    return {"features": features, "ids": ids, "labels": labels, "paths": paths, "next_id": next_id,
            "revision": m.get("revision", 0), "settings": m.get("index"), "where": feats,
            "index_cache": m.get("index_cache")}


@contextmanager
def _locked(index_dir):
    """An exclusive lock on the folder itself, across processes (no lock file left behind)."""
    fd = os.open(index_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _current(meta):
    """(revision, features file name) of the gallery.json at ``meta``, or None if there is none."""
    if not os.path.isfile(meta):
        return None
    m = _read_json(meta)
    revision = m.get("revision", 0)
    return (revision if type(revision) is int else 0), m.get("features", FEATURE_FILES[0])


def write_gallery(index_dir, features, ids, labels, paths, next_id, settings, revision, cache=None):
    """Save atomically (see the module doc); -> (new revision, features file). ``revision``: the one this
    copy was loaded at, or None for a new gallery, which replaces whatever ``index_dir`` holds.
    ``cache``: (serialised faiss index, its spec, index_cache.content_hash of features + ids) or None."""
    os.makedirs(index_dir, exist_ok=True)
    meta = os.path.join(index_dir, META)
    with _locked(index_dir):
        try:
            current = _current(meta)
        except DataError:
            if revision is not None:
                raise
            current = None  # a broken gallery being rebuilt
        if revision is not None and current is None:
            raise GalleryChanged(f"{meta} is gone since this gallery was loaded (revision {revision}); "
                                 f"not saved over whatever replaced it")
        if revision is not None and current[0] != revision:
            raise GalleryChanged(f"{meta} was saved by another writer since this gallery was loaded (now revision "
                                 f"{current[0]}, this copy is of revision {revision}); reload it and redo the change")
        old = current[1] if current and current[1] in FEATURE_FILES else None
        name = FEATURE_FILES[1] if old == FEATURE_FILES[0] else FEATURE_FILES[0]
        new_revision = (current[0] if current else 0) + 1
        replace_file(os.path.join(index_dir, name), lambda f: np.save(f, features, allow_pickle=False))
        record = {"format": FORMAT, "features": name, "dim": int(features.shape[1]),
                  "revision": new_revision, "next_id": next_id, "index": settings,
                  "ids": list(ids), "labels": list(labels), "paths": list(paths)}
        cache_name = index_cache.FILES[name]
        if cache is not None:
            data, spec, content = cache
            replace_file(os.path.join(index_dir, cache_name), lambda f: f.write(memoryview(data)))
            record["index_cache"] = index_cache.record(cache_name, data, spec, content)
        replace_file(meta, lambda f: f.write(json.dumps(record).encode()))
        fsync_dir(index_dir)
        keep = {name, cache_name} if cache is not None else {name}
        for stale in (set(FEATURE_FILES) | set(index_cache.FILES.values())) - keep:  # committed: none is named now
            if os.path.isfile(os.path.join(index_dir, stale)):
                os.remove(os.path.join(index_dir, stale))
    return new_revision, os.path.join(index_dir, name)
