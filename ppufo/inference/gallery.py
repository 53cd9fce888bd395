"""Gallery index: features of labelled gallery images, exact inner-product search with faiss.

Saved as ``features.npy`` + ``gallery.json`` (labels and image paths) — no pickle on load.
"""
import json
import os

import numpy as np


def list_gallery(source):
    """(paths, labels) from a folder with one sub-folder per label, or a list file of
    ``relative/path label [camid]`` lines (relative to the list file's folder): the lists an
    ImageList test set reads, whose camid column the index has no use for."""
    if os.path.isdir(source):
        paths, labels = [], []
        for label in sorted(os.listdir(source)):
            sub = os.path.join(source, label)
            if not os.path.isdir(sub):
                continue
            for name in sorted(os.listdir(sub)):
                paths.append(os.path.join(sub, name))
                labels.append(label)
        if not paths:
            raise ValueError(f"{source}: no images in label sub-folders (expected <label>/<image>)")
        return paths, labels
    if not os.path.isfile(source):
        raise FileNotFoundError(f"gallery source not found: {source}")
    base = os.path.dirname(os.path.abspath(source))
    paths, labels = [], []
    with open(source) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                raise ValueError(f"{source}:{n}: expected 'path label' or 'path label camid', got {line.strip()!r}")
            paths.append(os.path.join(base, parts[0]))
            labels.append(parts[1])
    return paths, labels


class GalleryIndex:
    def __init__(self, features, labels, paths):
        import faiss
        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(features) != len(labels) or len(labels) != len(paths):
            raise ValueError(f"gallery: {len(features)} features, {len(labels)} labels, {len(paths)} paths")
        self.labels, self.paths = list(labels), list(paths)
        self.index = faiss.IndexFlatIP(features.shape[1])
        self.index.add(features)  # the index holds its own copy: ``features`` is not kept

    def search(self, queries, k=5):
        """-> list (per query) of [{label, score, path}] best first."""
        k = min(k, len(self.labels))
        scores, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [[{"label": self.labels[j], "score": float(s), "path": self.paths[j]}
                 for s, j in zip(row_s, row_i)] for row_s, row_i in zip(scores, idx)]

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
        with open(meta) as f:
            m = json.load(f)
        return cls(np.load(feats, allow_pickle=False), m["labels"], m["paths"])
