"""Errors while loading a batch reach the training loop as themselves (no hang), after every batch
before them; the iterator then stops its workers; loader workers die with their parent."""
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import paddle
import pytest

from ppufo.data.loader import DataLoader
from ppufo.utils.errors import DataError


class BadAt(paddle.io.Dataset):
    def __init__(self, bad):
        self.bad = bad

    def __len__(self):
        return 32

    def __getitem__(self, i):
        if i == self.bad:
            raise DataError(f"cannot decode image img_{i}.jpg")
        return np.full([2], i, dtype="float32")


@pytest.mark.parametrize("shm", [False, True])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_error_mid_iteration_raises_in_the_loop(workers, shm):
    """Batches 0-3 in order, then the error as its own type with its message (naming the worker
    it came from), then the iterator has stopped: no more batches, no worker processes left."""
    it = iter(DataLoader(BadAt(9), batch_size=2, num_workers=workers, use_shared_memory=shm))
    seen = []
    start = time.time()
    with pytest.raises(DataError, match="img_9.jpg") as e:
        for batch in it:
            seen.append(batch.numpy()[:, 0].tolist())
    assert time.time() - start < 20
    assert seen == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert "Traceback" not in str(e.value)  # ppufo's own errors keep just their message
    if workers:
        assert str(e.value) == f"cannot decode image img_9.jpg (in loader worker({4 % workers}))"
    else:
        assert str(e.value) == "cannot decode image img_9.jpg"
    assert next(it, "ended") == "ended"
    assert multiprocessing.active_children() == []


class Fails(paddle.io.Dataset):
    """Item 5 raises ``error``; items are [i, i]."""

    def __init__(self, error, shapes=False):
        self.error, self.shapes = error, shapes

    def __len__(self):
        return 16

    def __getitem__(self, i):
        if i == 5 and self.shapes:
            return np.zeros([3], "float32")  # collate cannot stack it with [2]-shaped items
        if i == 5:
            raise self.error
        return np.full([2], i, dtype="float32")


@pytest.mark.parametrize("workers", [0, 2])
def test_other_errors_keep_their_type_and_traceback(workers):
    """An error that is not ppufo's own is raised as its type with the worker's traceback in the
    message (as Paddle reports it); a type that cannot be rebuilt from a message is a
    RuntimeError naming it; collate's own error (shapes that do not stack) comes in its batch's
    place too."""
    loader = DataLoader(Fails(ValueError("channel count 4")), batch_size=2, num_workers=workers)
    with pytest.raises(ValueError) as e:
        list(loader)
    text = str(e.value)
    assert "caught ValueError with message:" in text and "Traceback" in text and text.endswith("channel count 4\n")
    assert ("DataLoader worker(0)" if workers else "DataLoader thread") in text
    odd = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    with pytest.raises(RuntimeError, match="(?s)^UnicodeDecodeError: .*invalid start byte"):
        list(DataLoader(Fails(odd), batch_size=2, num_workers=workers))
    seen = []
    with pytest.raises(ValueError, match="all input arrays must have the same shape"):
        for batch in DataLoader(Fails(None, shapes=True), batch_size=2, num_workers=workers):
            seen.append(batch.shape[0])
    assert seen == [2, 2]


class Slow(paddle.io.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        time.sleep(0.25)
        return np.full([2], i, dtype="float32")


@pytest.mark.parametrize("workers", [0, 2])
def test_close_stops_the_workers_without_loading_what_is_in_flight(workers):
    """close() after the first batch: the batches sent out ahead (prefetch) are not loaded (each
    would take 2 s), the workers exit, and the iterator ends."""
    it = iter(DataLoader(Slow(), batch_size=8, num_workers=workers, use_shared_memory=False))
    first = next(it)
    assert first.numpy()[:, 0].tolist() == list(range(8))
    start = time.time()
    it.close()
    assert time.time() - start < 1.5
    assert multiprocessing.active_children() == []
    assert next(it, "ended") == "ended"


def test_persistent_workers_are_refused():
    with pytest.raises(ValueError, match="does not support persistent_workers"):
        DataLoader(BadAt(9), batch_size=2, num_workers=1, persistent_workers=True)


class SlowBefore(BadAt):
    """Batch ``bad // 2`` fails; the ones before it take a while, the ones after none."""

    def __getitem__(self, i):
        if i < self.bad:
            time.sleep(0.02)
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_every_batch_before_the_bad_one_arrives_however_slow_the_loop(workers):
    """The loop takes its batches slowly (as on a loaded machine): the batches read ahead (4 per
    worker), queued when a worker's error arrives, are still delivered, in order, then the error.
    With several workers a later worker's error waits for the batches before it."""
    loader = DataLoader(SlowBefore(9) if workers > 1 else BadAt(9), batch_size=2, num_workers=workers,
                        use_shared_memory=False, prefetch_factor=4)
    seen = []
    with pytest.raises(DataError, match="img_9.jpg"):
        for batch in loader:
            time.sleep(0.3)  # the worker has read ahead and failed while this batch is worked on
            seen.append(int(batch[0][0]))
    assert seen == [0, 2, 4, 6]


def test_a_failed_loader_left_in_a_reference_cycle_does_not_hang_later_workers():
    """A failed iterator kept by its error's traceback (a cycle: it lingers until the gc runs)
    used to hang the workers of a later loader: a forked worker inherits that garbage, its gc
    collects it, and the native reader's destructor waits forever in pthread_cond_destroy for a
    thread that lives only in the parent. The workers never collect what they inherit, and a
    failed iterator frees its reader at once."""
    code = textwrap.dedent("""
        import gc
        import numpy as np, paddle
        from ppufo.data.loader import DataLoader
        from ppufo.utils.errors import DataError

        class BadAt(paddle.io.Dataset):
            def __len__(self):
                return 32
            def __getitem__(self, i):
                if i == 9:
                    raise DataError("bad img_9")
                return np.full([2], i, dtype="float32")

        class Collects(paddle.io.Dataset):  # a worker whose gc runs (any allocation may run it)
            def __len__(self):
                return 8
            def __getitem__(self, i):
                gc.collect()
                return np.zeros([2], "float32")

        kept = []
        try:
            for _ in DataLoader(BadAt(), batch_size=2, num_workers=1, use_shared_memory=True):
                pass
        except DataError as e:
            kept.append(e)
        kept.clear()  # the failed iterator is now garbage in a cycle
        print(sum(1 for _ in DataLoader(Collects(), batch_size=2, num_workers=1)), flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["4"], proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("shm", ["False", "True"])
def test_a_third_loader_after_failed_ones_does_not_hang(shm):
    """Issue 15's closing note: a loader created after failed ones (num_workers 2) hung in Paddle's
    worker queue. Three failed loaders (errors kept, so their iterators linger in reference
    cycles), then a good one: every error in turn, all batches of the last, no worker left."""
    code = textwrap.dedent(f"""
        import multiprocessing
        import numpy as np, paddle
        from ppufo.data.loader import DataLoader
        from ppufo.utils.errors import DataError

        class BadAt(paddle.io.Dataset):
            def __init__(self, bad):
                self.bad = bad
            def __len__(self):
                return 32
            def __getitem__(self, i):
                if i == self.bad:
                    raise DataError(f"bad img_{{i}}")
                return np.full([2], i, dtype="float32")

        kept = []
        for bad in (9, 0, 3):
            seen = []
            try:
                for batch in DataLoader(BadAt(bad), batch_size=2, num_workers=2, use_shared_memory={shm}):
                    seen.append(int(batch[0][0]))
            except DataError as e:
                kept.append(e)
                print(len(seen), e, flush=True)
        print(sum(1 for _ in DataLoader(BadAt(-1), batch_size=2, num_workers=2, use_shared_memory={shm})),
              len(multiprocessing.active_children()), flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["4 bad img_9 (in loader worker(0))", "0 bad img_0 (in loader worker(0))",
                                        "1 bad img_3 (in loader worker(1))", "16 0"], proc.stdout


def test_worker_dies_with_its_parent():
    code = textwrap.dedent("""
        import os, sys, time
        from ppufo.data.loader import exit_with_parent
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            exit_with_parent(parent)
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the worker outlived its parent")
