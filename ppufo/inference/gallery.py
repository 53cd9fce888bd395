"""Gallery index: features of labelled gallery images under stable integer ids, searched by inner
product with faiss (search_index.py: Flat, IVF or HNSW), grown and shrunk by id, saved without pickle
(gallery_files.py) with its trained index (index_cache.py). Thread-safe: searches run side by side, an
add or a remove alone.
"""
import os
import threading

import numpy as np

from ..data.datasets.image_list import is_image
from ..utils.logger import get_logger
from ..utils.rwlock import ReadWriteLock
from ..utils.textfile import text_lines
from . import index_cache
from .gallery_files import read_gallery, write_gallery
from .search_index import IdIndex, IndexSettings


def list_gallery(source):
    """(paths, labels) from a folder with one sub-folder per label, or a list file of
    ``relative/path label [camid]`` lines (relative to the list file's folder): the lists an
    ImageList test set reads, whose camid column the index has no use for. Non-image files in
    the folders (notes.txt, Thumbs.db) are skipped and counted in the log, as the datasets do."""
    if os.path.isdir(source):
        paths, labels, skipped = [], [], []
        for label in sorted(os.listdir(source)):
            sub = os.path.join(source, label)
            if not os.path.isdir(sub):
                continue
            for name in sorted(os.listdir(sub)):
                if not is_image(name):
                    skipped.append(os.path.join(label, name))
                    continue
                paths.append(os.path.join(sub, name))
                labels.append(label)
        if skipped:
            get_logger().info(f"{source}: skipped {len(skipped)} non-image files, e.g. {skipped[:3]}")
        if not paths:
            raise ValueError(f"{source}: no images in label sub-folders (expected <label>/<image>)")
        return paths, labels
    if not os.path.isfile(source):
        raise FileNotFoundError(f"gallery source not found: {source}")
    base = os.path.dirname(os.path.abspath(source))
    paths, labels = [], []
    for n, line in text_lines(source, error=ValueError):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{source}:{n}: expected 'path label' or 'path label camid', got {line.strip()!r}")
        paths.append(os.path.join(base, parts[0]))
        labels.append(parts[1])
    return paths, labels


def check_features(features, where, paths=None):
    """``features`` as a contiguous float32 [N, D] array with N >= 1 and only finite values; else a
    ValueError naming ``where`` (and the first images at fault, when ``paths`` is given)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or not features.shape[0] or not features.shape[1]:
        raise ValueError(f"{where}: the gallery is empty or not [images, dim] features (shape "
                         f"{list(features.shape)}); build it from at least one image")
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad):
        at = [paths[i] for i in bad[:3]] if paths is not None else [f"row {i}" for i in bad[:3]]
        raise ValueError(f"{where}: {len(bad)} of {len(features)} gallery features are not finite "
                         f"(NaN or inf), e.g. {at}; rebuild the index")
    return features


class NotInGallery(ValueError):
    """An id or label to remove is not in the gallery (nothing was removed)."""


class GalleryWouldBeEmpty(ValueError):
    """A removal would leave no item (nothing was removed)."""


class GalleryIndex:
    """``where`` names the gallery in errors (the features file once loaded). ``ids``: one int per
    item (default 0..n-1); ``next_id``: the id the next added item gets (default above every id), so
    an id never names two items. ``settings``: an IndexSettings (default: IndexProcess's defaults);
    ``exact``: Flat whatever the settings say (a load that only edits and saves). ``cache``: see
    index_cache.lookup; ``from_cache`` says whether the index came from it."""

    def __init__(self, features, labels, paths, where="gallery", ids=None, next_id=None, settings=None,
                 exact=False, cache=None):
        features = check_features(features, where, paths if len(paths) == len(features) else None)
        if len(features) != len(labels) or len(labels) != len(paths):
            raise ValueError(f"{where}: {len(features)} features, {len(labels)} labels, {len(paths)} paths")
        ids = list(range(len(labels))) if ids is None else [int(i) for i in ids]
        if len(ids) != len(labels) or len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"{where}: expected {len(labels)} distinct ids >= 0 (faiss's 'no hit' is -1), got "
                             f"{len(ids)} ({len(set(ids))} distinct, smallest {min(ids, default=None)})")
        if next_id is not None and next_id <= max(ids):
            raise ValueError(f"{where}: next_id {next_id} must be above every id (max {max(ids)})")
        self.items = dict(zip(ids, zip(labels, paths)))  # id -> (label, path), in insertion order
        self.next_id = max(ids) + 1 if next_id is None else next_id
        self.settings = settings or IndexSettings()
        self.where, self.dim, self.revision = where, features.shape[1], None
        self.kind = "flat" if exact else self.settings.kind_for(len(ids))
        cached = cache(features, ids, self.kind) if cache else None
        self.from_cache = cached is not None
        self._spec = cached and cached[0]  # what the saved index was built for (its nlist setting)
        if cached:
            self.kind = cached[0]["kind"]
        self._index = IdIndex(self.kind, features, ids, self.settings, prebuilt=cached and cached[1])
        self._lock, self._save_lock = ReadWriteLock(), threading.Lock()

    def __len__(self):
        return len(self.items)

    @property
    def ids(self):
        with self._lock.read():
            return list(self.items)

    @property
    def labels(self):
        with self._lock.read():
            return [label for label, _ in self.items.values()]

    @property
    def paths(self):
        with self._lock.read():
            return [path for _, path in self.items.values()]

    def check_dim(self, feature_dim, model):
        if self.dim != feature_dim:
            raise ValueError(f"{self.where}: gallery features have dimension {self.dim}, but the model "
                             f"({model}) gives {feature_dim}; rebuild the index with this model")

    def search(self, queries, k=5):
        """-> list (per query) of [{id, label, score, path}] best first. faiss marks "no hit" (a
        non-finite query, or fewer items than k) with -1: such slots are left out."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock.read():
            scores, idx = self._index.search(queries, min(k, len(self.items)))
            return [[{"id": int(j), "label": self.items[j][0], "score": float(s), "path": self.items[j][1]}
                     for s, j in zip(row_s, row_i) if j >= 0] for row_s, row_i in zip(scores, idx)]

    def set_search(self, nprobe=None, ef_search=None):
        """IVF's nprobe / HNSW's ef_search on the built index."""
        with self._lock.write():
            self._index.set_search(nprobe, ef_search)

    def add(self, features, labels, paths):
        """Add items; -> their new ids."""
        features = check_features(features, "added features", paths if len(paths) == len(features) else None)
        if features.shape[1] != self.dim:
            raise ValueError(f"added features have dimension {features.shape[1]}, the gallery ({self.where}) "
                             f"{self.dim}")
        if len(features) != len(labels) or len(labels) != len(paths):
            raise ValueError(f"added items: {len(features)} features, {len(labels)} labels, {len(paths)} paths")
        with self._lock.write():
            ids = list(range(self.next_id, self.next_id + len(labels)))
            self._index.add(features, ids)
            self.next_id += len(ids)
            self.items.update(zip(ids, zip(labels, paths)))
        return ids

    def remove(self, ids=(), labels=()):
        """Remove the items with these ids and every item with these labels; -> the removed ids.
        All or nothing: an unknown id or label (NotInGallery) or emptying the gallery
        (GalleryWouldBeEmpty) removes nothing."""
        ids = [int(i) for i in ids]
        with self._lock.write():
            unknown = [i for i in ids if i not in self.items]
            wanted = set(labels)
            by_label = [i for i, (label, _) in self.items.items() if label in wanted]
            missing = sorted(wanted - {self.items[i][0] for i in by_label})
            if unknown or missing:
                raise NotInGallery("; ".join(
                    ([f"no gallery item with id {', '.join(map(str, unknown))}"] if unknown else [])
                    + ([f"no gallery item with label {', '.join(map(repr, missing))}"] if missing else []))
                    + " (nothing removed)")
            chosen = list(dict.fromkeys(ids + by_label))
            if len(chosen) == len(self.items):
                raise GalleryWouldBeEmpty(f"removing {len(chosen)} items would leave the gallery empty "
                                          f"(nothing removed); build a new one instead")
            self._index.remove(chosen)
            for i in chosen:
                del self.items[i]
        return chosen

    def save(self, index_dir):
        """Write features + gallery.json atomically (gallery_files.write_gallery), with the trained
        index when there is one worth keeping. A gallery loaded from disk refuses to save over one
        another writer saved since (GalleryChanged)."""
        with self._save_lock:  # saves in order: a later snapshot is never overwritten by an earlier one
            with self._lock.read():
                ids, items, next_id = list(self.items), list(self.items.values()), self.next_id
                features = self._index.vectors(ids)
                cache = self._index.serialized() if self._index.cacheable() else None
            if cache is not None:
                cache = (cache, self._spec or self._index.spec(), index_cache.content_hash(features, ids))
            self.revision, self.where = write_gallery(
                index_dir, features, ids, [label for label, _ in items], [path for _, path in items], next_id,
                self.settings.to_json(), self.revision, cache)

    @classmethod
    def load(cls, index_dir, settings=None, exact=False):
        """The gallery saved in ``index_dir``, its faiss index built per ``settings`` (the caller's
        config: not the saved ones, which record what its writer asked for) or read from the saved
        one if that matches them and the items; ``exact``: a load that only adds or removes items
        and saves: the saved index whatever its settings, else Flat (builds at once)."""
        g = read_gallery(index_dir)
        settings = settings or IndexSettings()
        index = cls(g["features"], g["labels"], g["paths"], where=g["where"], ids=g["ids"], next_id=g["next_id"],
                    settings=settings, exact=exact,
                    cache=index_cache.lookup(index_dir, g["index_cache"], settings, exact))
        index.revision = g["revision"]
        return index
