"""Gallery index: features of labelled gallery images, exact inner-product search with faiss.

Saved as ``features.npy`` + ``gallery.json`` (labels and image paths) — no pickle on load.
"""
import json
import os

import numpy as np

from ..data.datasets.image_list import is_image
from ..utils.logger import get_logger
from ..utils.textfile import text_lines


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


class GalleryIndex:
    """``where`` names the gallery in errors (the features file once loaded)."""

    def __init__(self, features, labels, paths, where="gallery"):
        import faiss
        features = check_features(features, where, paths if len(paths) == len(features) else None)
        if len(features) != len(labels) or len(labels) != len(paths):
            raise ValueError(f"{where}: {len(features)} features, {len(labels)} labels, {len(paths)} paths")
        self.labels, self.paths, self.where = list(labels), list(paths), where
        self.dim = features.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(features)  # the index holds its own copy: ``features`` is not kept

    def check_dim(self, feature_dim, model):
        if self.dim != feature_dim:
            raise ValueError(f"{self.where}: gallery features have dimension {self.dim}, but the model "
                             f"({model}) gives {feature_dim}; rebuild the index with this model")

    def search(self, queries, k=5):
        """-> list (per query) of [{label, score, path}] best first. faiss marks "no hit" (a
        non-finite query) with -1: such slots are left out, never read as the last label."""
        k = min(k, len(self.labels))
        scores, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [[{"label": self.labels[j], "score": float(s), "path": self.paths[j]}
                 for s, j in zip(row_s, row_i) if j >= 0] for row_s, row_i in zip(scores, idx)]

    def save(self, index_dir):
        os.makedirs(index_dir, exist_ok=True)
        np.save(os.path.join(index_dir, "features.npy"), self.index.reconstruct_n(0, self.index.ntotal))
        with open(os.path.join(index_dir, "gallery.json"), "w") as f:
            json.dump({"labels": self.labels, "paths": self.paths}, f)

    @classmethod
    def load(cls, index_dir):
        feats = os.path.join(index_dir, "features.npy")
        meta = os.path.join(index_dir, "gallery.json")
        for p in (feats, meta):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p} not found (build the index with predict_rec.py --build_index)")
        with open(meta, encoding="utf-8") as f:
            m = json.load(f)
        return cls(np.load(feats, allow_pickle=False), m["labels"], m["paths"], where=feats)
