"""Training input path, old vs new, side by side in one run: the paper's train transforms
(configs/ufo_vitl.yaml, 384x384) on real-size JPEGs through one DataLoader worker process.

python benchmark/data_throughput.py [--images 256] [--batch 32] [--rounds 2]

old: the worker normalises and erases per sample and sends float32 CHW through a pipe (before
issue 17). new: the worker sends uint8 HWC (+ the erasing draws) through /dev/shm and the batch
is normalised and erased in the main process (numpy here; Paddle ops on the device on a GPU).
A middle row sends float32 through /dev/shm, to tell the two changes apart. Half the JPEGs are
person-sized (128x256), half face-sized (250x250); written to a temp dir, removed after.
Images/s per core = images / the worker's CPU seconds (from /proc, so other load on the machine
does not count); "main" is the main process's CPU time to receive and finish a batch. Both
paths get the same seeds and must give the same batches (checked by hash).
"""
import argparse
import copy
import hashlib
import os
import shutil
import tempfile
import time

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle
from PIL import Image

from ppufo.data.batch_transforms import collate
from ppufo.data.datasets.base import DatasetSource, ImageDataset, Record
from ppufo.data.loader import train_transforms
from ppufo.utils.config import load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TICK = os.sysconf("SC_CLK_TCK")
# (name, uint8 samples, shared memory); the middle row tells the two changes apart
PATHS = [("old: float32 pipe", False, False), ("float32 shm", False, True), ("new: uint8 shm", True, True)]


class Jpegs(DatasetSource):
    """The JPEGs of a directory, decoded as the dataset readers do (DatasetSource.read)."""


def write_jpegs(root, n):
    """n JPEGs: smooth colour fields with noise, so they compress like photos."""
    rs = np.random.RandomState(0)
    records = []
    for i in range(n):
        w, h = (128, 256) if i % 2 == 0 else (250, 250)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(6 * x + c + i) * np.cos(5 * y - c) for c in range(3)], -1) * 90 + 128
        img = np.clip(base + rs.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(root, f"{i:05d}.jpg")
        Image.fromarray(img).save(path, quality=90)
        records.append(Record(path, i % 16, 0))
    return records


def worker_cpu():
    """CPU seconds used so far by this process's children (the loader's worker)."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            pids = fh.read().split()
        for pid in pids:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def nbytes(batch):
    if isinstance(batch, dict):
        return sum(nbytes(v) for v in batch.values())
    if isinstance(batch, list):
        return sum(nbytes(v) for v in batch)
    return batch.numel().item() * batch.element_size() if isinstance(batch, paddle.Tensor) else 0


def run(ds, batches, lean, shm):
    """(worker CPU s, main CPU s, wall s, bytes per batch, [hash per batch]) of one pass."""
    batch_part = None
    if lean:  # the dataset runs the sample part of its Compose, the batch part runs below
        ds = copy.copy(ds)
        ds.transform, batch_part = ds.transform.split()
    loader = paddle.io.DataLoader(ds, batch_sampler=batches, num_workers=1, collate_fn=collate, use_shared_memory=shm)
    it = iter(loader)  # Paddle's own iterator: the batch as sent
    sent, hashing, hashes = 0, 0.0, []
    wall, main = time.perf_counter(), time.process_time()
    for i in range(len(batches)):
        batch = next(it)
        images = batch_part(batch[0]) if lean else batch[0]
        array = images.numpy()  # the batch is ready (a device sync on a GPU)
        sent += nbytes(batch)
        if i == len(batches) - 1:
            cpu, wall = worker_cpu(), time.perf_counter() - wall
        t = time.process_time()
        hashes.append(hashlib.sha1(array.tobytes()).hexdigest())
        hashing += time.process_time() - t
    main = time.process_time() - main - hashing  # receiving (all threads) and finishing
    assert next(it, None) is None  # the end of data stops the worker
    return cpu, main, wall, sent / len(batches), hashes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="old and new alternate; the best round counts")
    a = p.parse_args()
    paddle.set_device("cpu")
    config = load_config(os.path.join(ROOT, "configs/ufo_vitl.yaml"))
    transform = train_transforms(config)
    size = config["Global"]["image_shape"][1]
    root = tempfile.mkdtemp(prefix="ppufo_data_throughput_")
    try:
        ds = ImageDataset([(Jpegs(root), write_jpegs(root, a.images))], transform=transform)
        seeds = np.random.SeedSequence(0).generate_state(a.images)
        order = np.random.RandomState(1).permutation(a.images)
        batches = [[(int(i), int(seeds[i])) for i in order[s:s + a.batch]] for s in range(0, a.images, a.batch)]
        best = {}
        for _ in range(a.rounds):
            for name, lean, shm in PATHS:
                r = run(ds, batches, lean, shm)
                if name not in best or r[0] < best[name][0]:
                    best[name] = r
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert len({tuple(r[4]) for r in best.values()}) == 1, "the paths' batches differ"
    print(f"{a.images} JPEGs (half 128x256, half 250x250), batches of {a.batch}, "
          f"{' '.join(next(iter(op)) for op in config['DataLoader']['Train']['transforms'])} at {size}; "
          f"1 worker; best of {a.rounds} rounds; identical batches")
    for name, (cpu, main_s, wall, sent, _) in best.items():
        print(f"  {name:17s} {a.images / cpu:6.1f} images/s per worker core ({1000 * cpu / a.images:.2f} ms CPU/image), "
              f"{sent / 2 ** 20:6.1f} MiB per batch, main {1000 * main_s / len(batches):5.1f} ms CPU/batch, "
              f"{a.images / wall:5.1f} images/s wall")
    old, new = best[PATHS[0][0]], best[PATHS[-1][0]]
    print(f"{old[3] / new[3]:.1f}x fewer bytes per batch, {old[0] / new[0]:.2f}x images/s per core "
          f"(paper transforms, {size})")


if __name__ == "__main__":
    main()
