"""Write the learnable demo datasets in each dataset's real on-disk layout.

python tools/make_demo_data.py --root ./data/demo [--seed 0] [--sets market1501,veri776,...] [--overwrite]
"""
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppufo.data.demo import WRITERS, write_all  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="./data/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sets", default="", help=f"comma-separated subset of {', '.join(WRITERS)}")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty root")
    a = p.parse_args()
    if os.path.isdir(a.root) and os.listdir(a.root):
        if not a.overwrite:
            sys.exit(f"error: {a.root} is not empty; pass --overwrite to replace it")
        shutil.rmtree(a.root)
    sets = [s for s in a.sets.split(",") if s] or None
    t = time.time()
    try:
        written = write_all(a.root, seed=a.seed, sets=sets)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for name in written:
        n = sum(len(f) for _, _, f in os.walk(os.path.join(a.root, name)))
        print(f"{name:14s} {n:6d} files  -> {os.path.join(a.root, name)}")
    print(f"wrote {len(written)} demo sets in {time.time() - t:.1f}s")


if __name__ == "__main__":
    main()
