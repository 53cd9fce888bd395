"""Gallery index types at 10^5 items: recall of IVF and HNSW against exact Flat, and the query
throughput of each, on the GalleryIndex the service searches (ppufo/inference/gallery.py).

python benchmark/gallery_recall.py [--items 100000] [--dim 256] [--ids 1000] [--queries 1000]
    [--noise 0.8] [--latent 32] [--nprobe 8 16 32 64] [--ef 32 64 128] [--repeats 3] [--seed 0]

Data (seeded): --ids identity centres in a --latent-dimensional subspace of R^dim (identities are
correlated, as learned features are), each item its identity's centre plus Gaussian noise of
--noise times the centre's scale in that subspace, then 10% isotropic noise in R^dim, L2-normalised.
Queries are fresh draws of random identities. With the defaults an item's nearest neighbour is of
its own identity for ~93% of queries: a ReID-like gallery, neither trivially separable nor noise.

recall@1: share of queries whose top-1 id is Flat's top-1; recall@10: mean share of Flat's top 10
ids found in the top 10. Throughput: one query per search call, as the service searches, faiss on
one thread; best of --repeats passes, the index types interleaved within each pass. Build: seconds
to build each index from the features. Load: seconds of GalleryIndex.load of the saved gallery, with
the trained index saved beside it (index_cache.py) and without (built again), IVF and HNSW. Last
line: the index that index_type auto picks at --items (IVF from auto_flat_below on), at its
defaults, against Flat; HNSW beside it; then the load with the saved index against the rebuild.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.search_index import DEFAULTS, IndexSettings


def clustered(rs, n, dim, ids, latent, noise):
    basis = rs.randn(dim, latent).astype(np.float32) / np.sqrt(latent)
    centres = rs.randn(ids, latent).astype(np.float32)

    def draw(labels):
        v = (centres[labels] + noise * rs.randn(len(labels), latent).astype(np.float32)) @ basis.T
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v += 0.1 * rs.randn(len(labels), dim).astype(np.float32) / np.sqrt(dim)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    return draw


def top_ids(index, queries, k):
    return np.array([[h["id"] for h in row] + [-1] * (k - len(row)) for row in index.search(queries, k)])


def qps(index, queries, k=10):
    start = time.perf_counter()
    for i in range(len(queries)):
        index.search(queries[i:i + 1], k)
    return len(queries) / (time.perf_counter() - start)


def load_seconds(index, kind, work, feats, names):
    """(seconds with the saved index, seconds building it) to load ``index``'s gallery (``feats``) as ``kind``."""
    cached, plain = os.path.join(work, kind), os.path.join(work, f"{kind}-plain")
    index.save(cached)
    GalleryIndex(feats, names, [""] * len(names), exact=True).save(plain)  # Flat: saved without an index
    out = []
    for folder in (cached, plain):
        start = time.perf_counter()
        loaded = GalleryIndex.load(folder, IndexSettings(index_type=kind))
        out.append(time.perf_counter() - start)
        assert loaded.from_cache == (folder == cached), folder
    return tuple(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ids", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.8)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import faiss
    rs = np.random.RandomState(a.seed)
    draw = clustered(rs, a.items, a.dim, a.ids, a.latent, a.noise)
    labels = rs.randint(0, a.ids, a.items)
    feats = draw(labels)
    q_labels = rs.randint(0, a.ids, a.queries)
    queries = draw(q_labels)
    names = [str(v) for v in labels]

    indexes, builds = {}, {}
    for kind in ("flat", "ivf", "hnsw"):
        start = time.perf_counter()
        indexes[kind] = GalleryIndex(feats, names, [""] * a.items, settings=IndexSettings(index_type=kind))
        builds[kind] = time.perf_counter() - start
        print(f"built {kind} over {a.items} x {a.dim} in {builds[kind]:.1f} s", flush=True)
    loads = {}
    with tempfile.TemporaryDirectory() as work:
        for kind in ("ivf", "hnsw"):
            loads[kind] = load_seconds(indexes[kind], kind, work, feats, names)
            print(f"load {kind}: {loads[kind][0]:.2f} s with the saved index, {loads[kind][1]:.1f} s building it",
                  flush=True)
    truth = top_ids(indexes["flat"], queries, 10)
    print(f"Flat top-1 is of the query's identity for {np.mean(labels[truth[:, 0]] == q_labels):.3f} of queries")

    rows = [("flat", None)] + [("ivf", n) for n in a.nprobe] + [("hnsw", e) for e in a.ef]
    recall, best = {}, {}
    faiss.omp_set_num_threads(1)
    for kind, knob in rows:
        indexes[kind].set_search(**({"nprobe": knob} if kind == "ivf" else {"ef_search": knob} if knob else {}))
        got = top_ids(indexes[kind], queries, 10)
        recall[kind, knob] = (np.mean(got[:, 0] == truth[:, 0]),
                              np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)]))
    for rep in range(a.repeats):
        for kind, knob in rows:
            indexes[kind].set_search(**({"nprobe": knob} if kind == "ivf" else {"ef_search": knob} if knob else {}))
            best[kind, knob] = max(best.get((kind, knob), 0), qps(indexes[kind], queries))
        print(f"timing pass {rep + 1}/{a.repeats} done", flush=True)

    flat_qps = best["flat", None]
    print(f"\n{a.items} items x {a.dim}-d, {a.ids} identities, {a.queries} queries, top 10, one query per call, "
          f"1 faiss thread")
    print("| index | setting | recall@1 | recall@10 | queries/s | vs Flat | build s |")
    print("|---|---|---|---|---|---|---|")
    for kind, knob in rows:
        setting = ("exact" if kind == "flat" else f"nprobe {knob} (nlist {IndexSettings().nlist_for(a.items)})"
                   if kind == "ivf" else f"ef_search {knob} (M {DEFAULTS['hnsw_m']})")
        default = (kind == "ivf" and knob == DEFAULTS["nprobe"]) or (kind == "hnsw" and knob == DEFAULTS["ef_search"])
        r1, r10 = recall[kind, knob]
        print(f"| {kind} | {setting}{' (default)' if default else ''} | {r1:.3f} | {r10:.3f} | "
              f"{best[kind, knob]:.0f} | {best[kind, knob] / flat_qps:.1f}x | {builds[kind]:.1f} |")
    auto = IndexSettings().kind_for(a.items)
    knob = {"flat": None, "ivf": DEFAULTS["nprobe"], "hnsw": DEFAULTS["ef_search"]}
    pick, hnsw = (auto, knob[auto]), ("hnsw", knob["hnsw"])
    setting = {"flat": "exact", "ivf": f"nprobe {knob['ivf']} of {IndexSettings().nlist_for(a.items)} lists",
               "hnsw": f"ef_search {knob['hnsw']}"}[auto]
    saved = auto if auto != "flat" else "ivf"  # Flat is never saved: it builds at once
    beside = (f"; HNSW ef_search {knob['hnsw']}: {best[hnsw] / flat_qps:.1f}x, recall@10 {recall[hnsw][1]:.3f}"
              if auto != "hnsw" and hnsw in best else "")
    print(f"{best[pick] / flat_qps:.1f}x faster than Flat at {a.items:.0e} items, {auto.upper()} recall@10 "
          f"{recall[pick][1]:.3f} (index_type auto's pick, {setting}, recall@1 {recall[pick][0]:.3f}{beside}; "
          f"{a.dim}-d, one query per call, 1 thread); {saved.upper()} loads in {loads[saved][0]:.2f} s with its saved "
          f"index vs {loads[saved][1]:.1f} s rebuilt".replace("e+0", "e"))


if __name__ == "__main__":
    main()
