"""Write the learnable demo datasets in each dataset's real on-disk layout.

python tools/make_demo_data.py --root ./data/demo [--seed 0] [--sets market1501,veri776,...] [--overwrite]
python tools/make_demo_data.py --root ./data/ufo --sets ufo_test_datasets   # the UFO reference's test tree
python tools/make_demo_data.py --root ./data/demo --sets custom_example     # own-data example, added beside the others
python tools/make_demo_data.py --root ./data/big --size market1501.num_test_ids=100 --size veri776.num_train_ids=6

Every set is read back with its reader after writing, and its counts are printed. A root that
already holds demo sets takes the sets it does not hold yet, leaving the others as they are.
"""
import argparse
import os
import shutil
import sys
import time

from ..demo import EXTRA_SETS, MANIFEST, READERS, WRITERS, write_all
from ..demo.sets import EXTRA_PARTS, READ_BACK, check_request
from ..utils.config import SEED_MAX, arg_range
from ..utils.errors import ConfigError


def describe(name, path, info):
    """One line of counts for a written set (read back with its reader where there is one)."""
    if name in READ_BACK:  # extra sets: one line per part, read with its ppufo reader
        return f"\n{'':20s}".join(f"{part}/{label}: {reader} on {counts}" for part, label, reader, counts
                                  in READ_BACK[name](path))
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


def parse_sizes(items):
    """{set: {keyword: int}} from ``--size set.keyword=value`` items (checked by check_request)."""
    sizes = {}
    for item in items:
        key, eq, value = item.partition("=")
        parts = key.strip().split(".")
        if not eq or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--size {item}: expected <set>.<keyword>=<integer>, e.g. market1501.num_test_ids=100")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"--size {item}: expected an integer value, got {value!r}") from None
        if parts[1] in sizes.get(parts[0], {}):
            raise ConfigError(f"--size {key.strip()} is given twice")
        sizes.setdefault(parts[0], {})[parts[1]] = number
    return sizes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="./data/demo", help="output folder (default ./data/demo)")
    p.add_argument("--seed", type=arg_range(int, min=0, max=SEED_MAX), default=0)
    p.add_argument("--sets", default="", help=f"comma-separated subset of: {','.join(WRITERS)} (default all "
                                              f"of these); also, written only when named: {','.join(EXTRA_SETS)} "
                                              f"(the UFO reference's test-set tree; a logo set in the layouts of "
                                              f"one's own data, docs/custom_data.md)")
    p.add_argument("--size", action="append", default=[], metavar="SET.KEYWORD=N",
                   help="a size knob of a set's writer (repeatable), e.g. market1501.num_test_ids=100; "
                        "as Global.demo_sizes (docs/datasets.md)")
    p.add_argument("--overwrite", action="store_true", help="delete and rewrite a non-empty --root (without it, "
                                                                 "sets a demo root lacks are added beside the others)")
    a = p.parse_args(argv)
    sets = [s.strip() for s in a.sets.split(",") if s.strip()] or None
    known = list(WRITERS) + list(EXTRA_SETS)
    unknown = sorted(set(sets or ()) - set(known))
    if unknown:
        p.error(f"unknown set(s) {unknown}; known: {','.join(known)}")
    try:  # before --overwrite deletes anything
        sets, sizes = check_request(sets, parse_sizes(a.size), where="--size ")
    except ConfigError as e:
        p.error(str(e))
    if os.path.exists(a.root) and not os.path.isdir(a.root):
        p.error(f"--root {a.root} exists and is not a folder")
    if os.path.isdir(a.root) and os.listdir(a.root):
        held = [s for s in sets if os.path.exists(os.path.join(a.root, s))]
        if a.overwrite:
            shutil.rmtree(a.root)
        elif held or not os.path.isfile(os.path.join(a.root, MANIFEST)):  # else: add sets to a demo root
            why = f"it holds {held} already" if held else f"it is not a demo root (no {MANIFEST})"
            p.error(f"--root {a.root} is not empty; pass --overwrite to replace it ({why}; sets a demo root "
                    f"does not hold yet are added beside the others)")
    t = time.time()
    written = write_all(a.root, seed=a.seed, sets=sets, sizes=sizes)
    for name, w in written.items():
        parts = EXTRA_PARTS.get(name, ())
        own = {f"{s}.{k}" if parts else k: v for s, kv in sizes.items() if s == name or s in parts
               for k, v in kv.items()}
        knobs = f"  ({', '.join(f'{k}={v}' for k, v in own.items())})" if own else ""
        print(f"{name:13s} {w['seconds']:5.1f}s  {w['path']}{knobs}\n{'':20s}{describe(name, w['path'], w['info'])}")
    print(f"wrote {len(written)} demo set(s) to {a.root} in {time.time() - t:.1f}s (seed {a.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
