"""The per-model batcher of the HTTP service (ppufo/inference/batcher.py) on its own: each caller gets
its own row, batches form while the model runs, the wait is bounded and skipped when no request is
coming, a failing item fails alone, and close() ends the thread."""
import threading
import time

import numpy as np
import pytest

from ppufo.inference.batcher import Batcher, BatcherClosed


class Model:
    """run(items) -> items * 10 as rows; records each batch and the threads that ran it. ``hold``: the
    first call waits for it; ``bad``: an item that makes the call raise."""

    def __init__(self, hold=None, bad=None, delay=0.0):
        self.batches, self.threads, self.hold, self.bad, self.delay, self.made = [], set(), hold, bad, delay, 0

    def make(self):
        self.made += 1
        return self.run

    def run(self, items):
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        if self.hold is not None and len(self.batches) == 1:
            self.hold.wait(10)
        time.sleep(self.delay)
        if self.bad is not None and self.bad in items:
            raise RuntimeError(f"item {self.bad} broke the model")
        return np.asarray(items, np.float32)[:, None] * 10


def call_all(batcher, items):
    """batcher(item) from one thread per item, all at once -> [(row or exception)] in order."""
    out = [None] * len(items)

    def one(i):
        try:
            out[i] = batcher(items[i])
        except Exception as e:
            out[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    return threads, out


@pytest.fixture
def batchers():
    made = []
    yield lambda *args, **kwargs: made.append(Batcher(*args, **kwargs)) or made[-1]
    for b in made:
        b.close()


def test_concurrent_callers_share_calls_and_each_gets_its_own_row(batchers):
    go = threading.Event()
    model = Model(hold=go)
    b = batchers(model.make, max_batch=8, wait_ms=5)
    threads, out = call_all(b, list(range(16)))
    deadline = time.time() + 10
    while len(b._queue) < 15 and time.time() < deadline:  # the first call holds; the other 15 queue up
        time.sleep(0.01)
    go.set()
    for t in threads:
        t.join(10)
    assert [float(row[0]) for row in out] == [10.0 * i for i in range(16)]  # no cross-talk
    sizes = [len(batch) for batch in model.batches]  # the held first call, then what queued behind it
    assert sum(sizes) == 16 and max(sizes) == 8 and len(sizes) == 3
    assert len(model.threads) == 1 and model.made == 1  # one predictor, in the batcher's thread
    snap = b.snapshot()
    assert (snap["calls"], snap["requests"], snap["largest"], snap["mean_batch"]) == (3, 16, 8, 5.33)


def test_a_lone_request_does_not_wait_when_no_other_is_coming(batchers):
    b = batchers(Model().make, max_batch=8, wait_ms=500)
    start = time.time()
    assert float(b(3)[0]) == 30.0
    assert time.time() - start < 0.25  # far below the 500 ms it may wait


def test_the_wait_for_a_request_being_decoded_is_bounded(batchers):
    """A request announced (being decoded) but never submitted holds a lone one back at most wait_ms."""
    model = Model()
    b = batchers(model.make, max_batch=8, wait_ms=200)
    with b.expecting():  # e.g. a large image still decoding in another thread
        start = time.time()
        threads, out = call_all(b, [4])
        threads[0].join(5)
        took = time.time() - start
    assert float(out[0][0]) == 40.0 and 0.18 < took < 0.18 + 1.0
    assert model.batches == [[4]]


def test_a_request_being_decoded_joins_the_batch(batchers):
    model = Model()
    b = batchers(model.make, max_batch=8, wait_ms=2000)
    with b.expecting() as submit:
        threads, out = call_all(b, [1])
        time.sleep(0.1)  # the lone one waits for this block's array
        assert submit(2)[0] == 20.0
    threads[0].join(5)
    assert model.batches == [[1, 2]] and float(out[0][0]) == 10.0


def test_a_failed_decode_releases_the_wait(batchers):
    b = batchers(Model().make, max_batch=8, wait_ms=5000)
    start = time.time()
    with pytest.raises(ValueError):
        with b.expecting():
            threads, out = call_all(b, [1])
            time.sleep(0.1)
            raise ValueError("not an image")
    threads[0].join(5)
    assert float(out[0][0]) == 10.0 and time.time() - start < 2


def test_an_item_that_breaks_the_model_fails_alone(batchers):
    go = threading.Event()
    model = Model(hold=go, bad=3)
    b = batchers(model.make, max_batch=8, wait_ms=5)
    threads, out = call_all(b, [0, 1, 2, 3, 4])
    deadline = time.time() + 10
    while len(b._queue) < 4 and time.time() < deadline:
        time.sleep(0.01)
    go.set()
    for t in threads:
        t.join(10)
    assert isinstance(out[3], RuntimeError) and "item 3 broke the model" in str(out[3])
    assert [float(out[i][0]) for i in (0, 1, 2, 4)] == [0.0, 10.0, 20.0, 40.0]
    assert any(3 in batch and len(batch) > 1 for batch in model.batches) and [3] in model.batches
    assert b.snapshot()["failed_calls"] == 2  # the batch, then item 3 alone


def test_a_predictor_that_cannot_be_made_fails_its_callers_and_is_made_again(batchers):
    model, attempts = Model(), []

    def make():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("clone failed")
        return model.run
    b = batchers(make, max_batch=4, wait_ms=5)
    with pytest.raises(RuntimeError, match="clone failed"):
        b(1)
    assert float(b(2)[0]) == 20.0 and len(attempts) == 2


def test_close_fails_queued_requests_and_ends_the_thread():
    go = threading.Event()
    b = Batcher(Model(hold=go).make, max_batch=1, wait_ms=5)
    threads, out = call_all(b, [1, 2, 3])
    deadline = time.time() + 10
    while len(b._queue) < 2 and time.time() < deadline:
        time.sleep(0.01)
    closer = threading.Thread(target=b.close)
    closer.start()
    time.sleep(0.1)
    go.set()  # the running call finishes normally
    closer.join(10)
    for t in threads:
        t.join(10)
    assert not b.alive
    assert sorted(isinstance(o, BatcherClosed) for o in out) == [False, True, True]
    with pytest.raises(BatcherClosed, match="shutting down"):
        b(4)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch": 0}, "max_batch=0: expected an integer >= 1"),
    ({"wait_ms": -1}, "batch_wait_ms=-1: expected milliseconds >= 0"),
])
def test_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Batcher(Model().make, **{"max_batch": 8, "wait_ms": 5, **kwargs})
