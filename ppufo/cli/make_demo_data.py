"""Write the learnable demo datasets in each dataset's real on-disk layout.

python tools/make_demo_data.py --root ./data/demo [--seed 0] [--sets market1501,veri776,...] [--overwrite]
python tools/make_demo_data.py --root ./data/ufo --sets ufo_test_datasets   # the UFO reference's test tree

Every set is read back with its reader after writing, and its counts are printed.
"""
import argparse
import os
import shutil
import sys
import time

from ..demo import EXTRA_SETS, READERS, WRITERS, write_all
from ..demo.released import read_back


def describe(name, path, info):
    """One line of counts for a written set (read back with its reader where there is one)."""
    if name in EXTRA_SETS:  # the reference tree: one line per test set, read with its ppufo reader
        return f"\n{'':20s}".join(f"{task}/{label}: {reader} on {counts}" for task, label, reader, counts
                                  in read_back(path))
    if name in READERS:
        from ..data.datasets import DATASETS
        summary = DATASETS.build({"name": READERS[name], "root": path}).summary()
        return "; ".join(f"{split} {s['images']} imgs/{s['ids']} ids/{s['cameras']} cams"
                         + (f" (+{s['skipped']} skipped)" if s.get("skipped") else "")
                         for split, s in summary.items())
    files = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
    facts = {k: v for k, v in (info or {}).items() if isinstance(v, int)}
    nested = {k: v.get("num_pairs") for k, v in (info or {}).items() if isinstance(v, dict) and "num_pairs" in v}
    text = ", ".join([f"{k} {v}" for k, v in facts.items()] + [f"{k} {v} pairs" for k, v in nested.items()])
    return f"{len(files)} files ({', '.join(files)})" + (f"; {text}" if text else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="./data/demo", help="output folder (default ./data/demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", default="", help=f"comma-separated subset of: {','.join(WRITERS)} (default all "
                                              f"of these); also {','.join(EXTRA_SETS)} (the UFO reference's "
                                              f"test-set tree, written only when named)")
    p.add_argument("--overwrite", action="store_true", help="delete and rewrite a non-empty --root")
    a = p.parse_args(argv)
    sets = [s.strip() for s in a.sets.split(",") if s.strip()] or None
    known = list(WRITERS) + list(EXTRA_SETS)
    unknown = sorted(set(sets or ()) - set(known))
    if unknown:
        p.error(f"unknown set(s) {unknown}; known: {','.join(known)}")
    if os.path.exists(a.root) and not os.path.isdir(a.root):
        p.error(f"--root {a.root} exists and is not a folder")
    if os.path.isdir(a.root) and os.listdir(a.root):
        if not a.overwrite:
            p.error(f"--root {a.root} is not empty; pass --overwrite to replace it")
        shutil.rmtree(a.root)
    t = time.time()
    written = write_all(a.root, seed=a.seed, sets=sets)
    for name, w in written.items():
        print(f"{name:13s} {w['seconds']:5.1f}s  {w['path']}\n{'':20s}{describe(name, w['path'], w['info'])}")
    print(f"wrote {len(written)} demo set(s) to {a.root} in {time.time() - t:.1f}s (seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
