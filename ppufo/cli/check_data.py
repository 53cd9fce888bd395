"""Decode every training and test image of a config once and list every bad one, before a long run.

python tools/check_data.py -c configs/ufo_vitl.yaml [-o Section.key=value ...] [--workers N] [--split train|test|all]

The sets are built as training and evaluation build them (build_task_train_set, build_test_sets and
each protocol's splits) and every item is decoded by its own source (ImageDataset.read), so what
passes here is what training can read. A symbolic link under a dataset root whose target is gone
is bad too (the folder scanners would pass over it as a non-image file). Test queries that will
have nothing to find (an id not in the gallery, a label with one image) are noted, not failed.
Exit status 1 if any image, link or set is bad, else 0.
"""
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from ..data.datasets.base import ImageDataset
from ..data.loader import build_task_train_set, exit_with_parent
from ..demo import ensure_demo_data
from ..engine.evaluator import build_test_sets, configured_labels
from ..utils.config import arg_range, load_config, parse_args
from ..utils.errors import ConfigError, DataError

CHUNK = 64  # images per pool task: few round trips, yet a smooth progress bar
_SETS = []  # the datasets, inherited by the pool's workers (fork) or sent to them (spawn)


def _init_worker(datasets, parent_pid):
    global _SETS
    exit_with_parent(parent_pid)
    _SETS = datasets


def check_range(k, start, stop):
    """(number of items read, [(index, error)]) of items start..stop-1 of set ``k``."""
    ds, bad, n = _SETS[k], [], 0
    for i in range(start, stop):
        n += 1  # counted, not assumed: the summary compares it with the set's length
        try:
            ds.read(i)
        except DataError as e:  # names the file or record already
            bad.append((i, str(e)))
        except Exception as e:  # noqa: BLE001 - training would die on it too
            source = ds.sources[ds.owner[i]]
            bad.append((i, f"{source.name}: {ds.record(i).key}: {type(e).__name__}: {e}"))
    return n, bad


def build_sets(config, split):
    """([(name, ImageDataset)], [(name, error)], [(name, note)]): the sets as training/evaluation
    build them; a set that cannot be built is reported and the others are still checked. Notes:
    test queries that will have nothing to find (a user's ImageList / ImageFolder counts them)."""
    sets, failed, notes = [], [], []
    if split in ("train", "all"):
        for task in config["Tasks"]:
            try:
                sets.append((f"train/{task}", build_task_train_set(config, task)))
            except DataError as e:
                failed.append((f"train/{task}", str(e)))
    if split in ("test", "all"):
        seen = set()
        for label in configured_labels(config):
            try:
                test_sets = build_test_sets(config, only=[label])
            except DataError as e:
                failed.append((f"test/{label}", str(e)))
                continue
            for ts in test_sets:
                if (ts.task, ts.label) in seen:
                    continue
                seen.add((ts.task, ts.label))
                for s in ts.protocol.splits:
                    name = f"test/{ts.task}/{ts.label}" + (f" {s}" if len(ts.protocol.splits) > 1 else "")
                    try:
                        records = ts.protocol.records(ts.source, s)
                        sets.append((name, ImageDataset([(ts.source, records)], relabel=False)))
                    except DataError as e:
                        failed.append((name, str(e)))
                        continue
                    lost = getattr(ts.source, "without_match", {}).get(s)
                    if lost:
                        notes.append((name, f"{lost} of {len(records)} queries have nothing to find "
                                            f"({ts.protocol.no_match}); the scores leave them out"))
    return sets, failed, notes


def dangling_links(roots):
    """[(link, target)] of the symbolic links under the folders ``roots`` whose target does not
    exist, sorted. Links to folders are not followed (no cycles); a root that is a link is."""
    found, seen = [], set()
    stack = [r for r in roots if os.path.isdir(r)]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable: the sets' own reading reports what it needs from it
            continue
        for e in entries:
            if e.is_symlink():
                if not os.path.exists(e.path):
                    found.append((e.path, os.readlink(e.path)))
            elif e.is_dir():
                stack.append(e.path)
    return sorted(found)


def check_sets(sets, workers):
    """[(checked, [(index, error)])] per set, with a progress bar per set."""
    global _SETS
    _SETS = [ds for _, ds in sets]
    pool = None
    if workers > 0:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(_SETS, os.getpid()))
    out = []
    try:
        for k, (name, ds) in enumerate(sets):
            ranges = [(k, s, min(s + CHUNK, len(ds))) for s in range(0, len(ds), CHUNK)]
            checked, bad = 0, []
            with tqdm(total=len(ds), desc=name, unit="img", leave=False, disable=None) as bar:
                done = (f.result() for f in as_completed([pool.submit(check_range, *r) for r in ranges])) \
                    if pool else (check_range(*r) for r in ranges)
                for n, b in done:
                    checked += n
                    bad += b
                    bar.update(n)
            bad.sort()
            for i, error in bad:
                print(f"BAD {name} item {i}: {error}", flush=True)
            out.append((checked, bad))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def main():
    args = parse_args("ppufo dataset check", extra=lambda p: (
        p.add_argument("--workers", type=arg_range(int, min=0), default=min(4, os.cpu_count() or 1),
                       help="decoding processes (0: in this process; default min(4, cores))"),
        p.add_argument("--split", choices=("train", "test", "all"), default="all")))
    try:
        config = load_config(args.config, args.override)
        ensure_demo_data(config)
        sets, failed, notes = build_sets(config, args.split)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    for name, error in failed:
        print(f"BAD {name}: cannot build the set: {error}", flush=True)
    links = dangling_links(sorted({s.root for _, ds in sets for s in ds.sources}))
    for link, target in links:
        print(f"BAD {link}: dangling symbolic link to {target} (the target does not exist)", flush=True)
    print(f"checking {len(sets)} sets, {sum(len(ds) for _, ds in sets)} images, "
          f"with {args.workers or 'no'} worker processes", flush=True)
    t = time.time()
    try:
        results = check_sets(sets, args.workers)
    except BrokenProcessPool as e:  # a decoder crashed the process itself (e.g. a segfault)
        sys.exit(f"error: a decoding worker died ({e}); rerun with --workers 0 to find the image")
    width = max([len(n) for n, _ in sets + failed] + [4])
    print("summary:")
    n_bad = len(failed) + len(links)
    for (name, ds), (checked, bad) in zip(sets, results):
        sources = "+".join(s.name for s in ds.sources)
        short = f"  CHECKED ONLY {checked} OF {len(ds)}" if checked != len(ds) else ""
        n_bad += len(bad) + (checked != len(ds))
        print(f"  {name:{width}s} {checked:8d} checked {len(bad):6d} bad  {sources}{short}")
    for name, _ in failed:
        print(f"  {name:{width}s} {'not built':>24s}")
    if links:
        print(f"  {len(links)} dangling symbolic link(s) under the dataset roots")
    for name, note in notes:
        print(f"  note: {name}: {note}")
    total = sum(c for c, _ in results)
    if n_bad:
        sys.exit(f"error: {n_bad} bad (images, records, links or sets) of {total} images in "
                 f"{len(sets) + len(failed)} sets; see the BAD lines above")
    print(f"ok: all {total} images of {len(sets)} sets decode ({time.time() - t:.1f}s)")


if __name__ == "__main__":
    main()
