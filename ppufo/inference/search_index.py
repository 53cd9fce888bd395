"""The faiss structure behind a gallery: exact Flat, IVF or HNSW, inner product on L2-normalised
features, keyed by stable int64 ids so that items can be added and removed by id.

Which one a gallery gets is ``IndexSettings.kind_for(items)``; the defaults come from
benchmark/gallery_recall.py (docs/deploy.md, "Index types"). HNSW cannot delete from its graph: a
removed id is masked at search time and its vector stays in memory until the index is rebuilt
(such an index is not cached: index_cache.py).
"""
import math

import numpy as np

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
# IndexProcess's index keys and their defaults (deploy_config.SCHEMA documents them)
DEFAULTS = {"index_type": "auto", "auto_flat_below": 100_000, "nlist": None, "nprobe": 32, "hnsw_m": 32,
            "ef_search": 64}
IVF_MIN_POINTS = 39  # faiss's k-means wants this many training points per list


class IndexSettings:
    """How to index a gallery; ``kind_for`` resolves ``auto`` for a size."""

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"IndexSettings: unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}")
        values = {**DEFAULTS, **kwargs}
        if values["index_type"] not in INDEX_TYPES:
            raise ValueError(f"index_type: {values['index_type']!r} is not one of {list(INDEX_TYPES)}")
        self.__dict__.update(values)

    @classmethod
    def from_config(cls, section):
        """From a validated IndexProcess section."""
        return cls(**{k: section[k] for k in DEFAULTS})

    def to_json(self):
        return {k: getattr(self, k) for k in DEFAULTS}

    def kind_for(self, items):
        if self.index_type != "auto":
            return self.index_type
        # above: IVF, as fast as HNSW at the same recall in benchmark/gallery_recall.py, and it deletes for real
        return "flat" if items < self.auto_flat_below else "ivf"

    def nlist_for(self, items):
        """The IVF's list count: ``nlist``, or 4 sqrt(items) kept under faiss's 39 points per list."""
        if self.nlist is None:
            return max(1, min(round(4 * math.sqrt(items)), items // IVF_MIN_POINTS))
        if self.nlist > items:
            raise ValueError(f"IndexProcess.nlist={self.nlist}: an IVF index trains one list per cluster and needs "
                             f"at least {self.nlist} gallery items, the gallery has {items}; lower nlist, leave it "
                             f"null (4 sqrt(items)) or use index_type flat")
        return self.nlist


class IdIndex:
    """A faiss index from int64 ids to features. Not thread-safe: GalleryIndex locks around it."""

    def __init__(self, kind, features, ids, settings, prebuilt=None):
        """``prebuilt``: a faiss index of this kind already holding ``features`` under ``ids`` (a cache)."""
        import faiss
        dim = features.shape[1]
        self.kind, self.settings, self.masked, self._mask = kind, settings, set(), None
        if prebuilt is not None:
            self._adopt(prebuilt)
            return
        if kind == "flat":
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        elif kind == "hnsw":
            self.graph = faiss.index_factory(dim, f"HNSW{settings.hnsw_m},Flat", faiss.METRIC_INNER_PRODUCT)
            self.graph.hnsw.efSearch = settings.ef_search
            self.index = faiss.IndexIDMap2(self.graph)  # IDMap2: a vector can be read back by id (save)
        elif kind == "ivf":  # its lists hold the ids themselves; the hash map finds a vector by id
            nlist = settings.nlist_for(len(features))
            self.index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            self.index.train(features)
            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)
            self.index.nprobe = min(settings.nprobe, nlist)
        else:
            raise ValueError(f"index kind {kind!r}: expected one of {list(INDEX_TYPES[1:])}")
        self.add(features, ids)

    def _adopt(self, index):
        import faiss
        self.index = index
        if self.kind == "hnsw":
            self.graph = faiss.downcast_index(index.index)
        self.set_search(self.settings.nprobe, self.settings.ef_search)

    def spec(self):
        """What was built, as index_cache records it."""
        spec = {"kind": self.kind, "metric": "inner_product", "dim": int(self.index.d)}
        if self.kind == "ivf":
            spec.update(factory=f"IVF{self.index.nlist},Flat", nlist=self.settings.nlist)
        elif self.kind == "hnsw":
            hnsw = self.graph.hnsw
            m = hnsw.nb_neighbors(1)  # layers above 0 hold M neighbours, layer 0 2M
            spec.update(factory=f"HNSW{m},Flat", hnsw_m=m, ef_construction=hnsw.efConstruction)
        return spec

    def cacheable(self):
        """Worth saving: a trained index holding no masked (removed) vectors; Flat rebuilds at once."""
        return self.kind == "ivf" or (self.kind == "hnsw" and not self.masked)

    def serialized(self):
        import faiss
        return faiss.serialize_index(self.index)

    def set_search(self, nprobe=None, ef_search=None):
        """Change a built index's search-time knobs (what benchmark/gallery_recall.py sweeps)."""
        if nprobe is not None:
            self.settings.nprobe = nprobe
            if self.kind == "ivf":
                self.index.nprobe = min(nprobe, self.index.nlist)
        if ef_search is not None:
            self.settings.ef_search = ef_search
            if self.kind == "hnsw":
                self.graph.hnsw.efSearch = ef_search

    def add(self, features, ids):
        self.index.add_with_ids(features, np.asarray(ids, dtype=np.int64))

    def remove(self, ids):
        if self.kind == "hnsw":
            import faiss
            self.masked.update(ids)
            batch = faiss.IDSelectorBatch(np.fromiter(self.masked, dtype=np.int64, count=len(self.masked)))
            self._mask = (batch, faiss.IDSelectorNot(batch))  # the Not refers to the batch: keep both alive
            return
        removed = self.index.remove_ids(np.asarray(ids, dtype=np.int64))
        if removed != len(ids):  # GalleryIndex checked them: the index and its metadata disagree
            raise RuntimeError(f"faiss removed {removed} of {len(ids)} ids {list(ids)[:5]}")

    def search(self, queries, k):
        """(scores, ids) [n, k]; id -1 marks an empty slot."""
        if self._mask is None:
            return self.index.search(queries, k)
        import faiss
        params = faiss.SearchParametersHNSW(sel=self._mask[1], efSearch=self.settings.ef_search)
        return self.index.search(queries, k, params=params)

    def vectors(self, ids):
        return self.index.reconstruct_batch(np.asarray(ids, dtype=np.int64))
