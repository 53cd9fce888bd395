"""A trained IVF / HNSW index saved beside its gallery, so that a load need not rebuild it (~19 s at
10^5 x 256-d). The file is faiss's own binary format (faiss.serialize_index, no pickle); gallery.json
records it under ``index_cache``:

    {"file": "index.faiss", "sha256": <of the file>, "content": <hash of the features + ids>,
     "spec": {"kind", "factory", "metric", "dim", "nlist" | "hnsw_m", "ef_construction"}}

A load adopts the file only when the gallery's features and ids hash to ``content``, the file to
``sha256``, and ``spec`` is what the loader's settings would build; otherwise it rebuilds (a file
that is missing, altered or unreadable: with a warning naming it). The save writes the file under
the name paired with the features file, before gallery.json, so the one rename commits both.
"""
import hashlib
import os

import numpy as np

from ..utils.logger import get_logger

FILES = {"features.npy": "index.faiss", "features.1.npy": "index.1.faiss"}
EF_CONSTRUCTION = 40  # faiss's default; IdIndex does not change it


def content_hash(features, ids):
    """Hash of what an index holds: the ids and their features, in order."""
    h = hashlib.sha256()
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    h.update(np.asarray(features.shape, np.int64).tobytes())
    h.update(ids.tobytes())
    h.update(np.ascontiguousarray(features, dtype=np.float32).data)
    return h.hexdigest()


def expected_spec(kind, settings, dim):
    """The keys a cached index must match to stand in for one built with ``settings`` (its trained
    nlist under nlist null is not among them: an IVF keeps its lists as the gallery grows)."""
    spec = {"kind": kind, "metric": "inner_product", "dim": int(dim)}
    if kind == "ivf":
        spec["nlist"] = settings.nlist
    elif kind == "hnsw":
        spec.update(hnsw_m=settings.hnsw_m, ef_construction=EF_CONSTRUCTION)
    return spec


def matches(record, spec, content):
    """Whether gallery.json's ``index_cache`` record is for these settings (None: any) and this content."""
    if not (isinstance(record, dict) and record.get("content") == content and isinstance(record.get("spec"), dict)
            and record["spec"].get("kind") in ("ivf", "hnsw")):
        return False
    return spec is None or {k: v for k, v in record["spec"].items() if k != "factory"} == spec


def read(index_dir, record, n_items):
    """The faiss index the record names, or None (warning naming the file) if it cannot be trusted."""
    import faiss
    path = os.path.join(index_dir, str(record.get("file")))
    log = get_logger()
    if record.get("file") not in FILES.values() or not os.path.isfile(path):
        log.warning(f"{path}: the index cache named in gallery.json is missing; rebuilding the index")
        return None
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        log.warning(f"{path}: the index cache is not the file gallery.json recorded (checksum differs); "
                    f"rebuilding the index")
        return None
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        log.warning(f"{path}: not a readable faiss index ({str(e)[:200]}); rebuilding the index")
        return None
    spec = record["spec"]
    if index.d != spec.get("dim") or index.ntotal != n_items or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        log.warning(f"{path}: the index cache holds {index.ntotal} x {index.d}-d vectors, the gallery "
                    f"{n_items} x {spec.get('dim')}-d; rebuilding the index")
        return None
    return index


def record(name, data, spec, content):
    """gallery.json's ``index_cache`` for serialised index ``data`` saved as ``name``."""
    return {"file": name, "sha256": hashlib.sha256(memoryview(data)).hexdigest(), "content": content, "spec": spec}


def lookup(index_dir, record, settings, exact):
    """GalleryIndex's ``cache``: ``(features, ids, kind) -> (its spec, faiss index)`` from the cache gallery.json
    records, or None to build. ``exact`` (a load that only edits and saves) takes a cache of any settings."""
    def find(features, ids, kind):
        if record is None or (kind == "flat" and not exact):
            return None
        spec = None if exact else expected_spec(kind, settings, features.shape[1])
        if not matches(record, spec, content_hash(features, ids)):
            get_logger().info(f"{index_dir}: the saved index is for other settings or items; building the index")
            return None
        index = read(index_dir, record, len(ids))
        if index is None:
            return None
        get_logger().info(f"{os.path.join(index_dir, record['file'])}: the saved {record['spec']['kind']} index "
                          f"matches the gallery; loaded, not built")
        return record["spec"], index
    return find
