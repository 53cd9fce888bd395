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
