"""Memory of a face training set's index: one Record per image (a list of namedtuples, as
MS1MRecordIO.train() used to return) vs a RecordArray (three arrays), both merged into the
ImageDataset the trainer samples from, side by side in one run.

python benchmark/dataset_memory.py [--records 5179510 --ids 93431]   (MS1M-V3's counts)

Memory is what tracemalloc sees allocated by building the split and the dataset (numpy reports
its buffers to it). Each DataLoader worker that reads a list of Python objects also dirties the
pages holding their reference counts and so copies them; arrays it only reads stay shared.
"""
import argparse
import gc
import time
import tracemalloc

import numpy as np

from ppufo.data.datasets.base import ImageDataset, Record, RecordArray


class IndexOnly:
    """A source that is only indexed here (no image is read)."""
    name, root = "MS1M-like", "(synthetic)"


def build(kind, keys, pids):
    if kind == "list":
        split = [Record(k, p, 0) for k, p in zip(keys.tolist(), pids.tolist())]
    else:
        split = RecordArray(keys, pids)
    return split, ImageDataset([(IndexOnly(), split)])


def measure(kind, keys, pids):
    """(bytes held, seconds to build, a digest to compare): timed untraced (tracemalloc slows
    every Python allocation), then built again under tracemalloc."""
    gc.collect()
    t = time.perf_counter()
    split, ds = build(kind, keys, pids)
    seconds = time.perf_counter() - t
    check = (ds.num_classes, int(ds.labels @ np.arange(len(ds))), ds.record(len(ds) - 1))
    del split, ds
    gc.collect()
    tracemalloc.start()
    held = build(kind, keys, pids)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del held
    return size, seconds, check


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=5179510)
    p.add_argument("--ids", type=int, default=93431)
    args = p.parse_args()
    keys = np.arange(1, args.records + 1, dtype=np.int64)
    pids = np.sort(np.random.RandomState(0).randint(0, args.ids, args.records)).astype(np.int64)
    res = {kind: measure(kind, keys, pids) for kind in ("list", "array")}
    assert res["list"][2] == res["array"][2], "the two indexes disagree"
    for kind, (size, seconds, _) in res.items():
        print(f"{kind:5s}: {size / 2 ** 20:8.1f} MiB, built in {seconds:.2f} s "
              f"({size / args.records:.0f} bytes per image)")
    (ls, lt, _), (a_s, at, _) = res["list"], res["array"]
    print(f"{ls / a_s:.1f}x less memory, {lt / at:.1f}x faster to build: RecordArray vs a list of Records, "
          f"{args.records} images (same labels and records)")


if __name__ == "__main__":
    main()
