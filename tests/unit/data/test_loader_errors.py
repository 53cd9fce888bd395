"""Errors while loading a batch reach the training loop as themselves (no hang), and loader
workers die with their parent."""
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


@pytest.mark.parametrize("workers", [0, 1])
def test_error_mid_iteration_raises_in_the_loop(workers):
    loader = DataLoader(BadAt(9), batch_size=2, num_workers=workers, use_shared_memory=False)
    seen = []
    start = time.time()
    with pytest.raises(DataError, match="img_9.jpg") as e:
        for batch in loader:
            seen.append(batch)
    assert time.time() - start < 20
    assert len(seen) == 4  # batches 0-3 before the bad one
    assert "Traceback" not in str(e.value)  # a worker's error is shortened to its message


class SlowBefore(BadAt):
    """Batch ``bad // 2`` fails; the ones before it take a while, the ones after none."""

    def __getitem__(self, i):
        if i < self.bad:
            time.sleep(0.02)
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [1, 3])
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
