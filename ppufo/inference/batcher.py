"""Micro-batching for the HTTP service: concurrent requests to one model run as one predictor call.

Request threads decode and preprocess their image themselves, then hand the array to the model's
``Batcher`` and wait. The batcher's own thread takes what is queued -- up to ``max_batch`` arrays --
runs them as one call and gives each caller its own row. It owns the only predictor that runs the
model (made by ``make_run`` in that thread: Paddle Inference predictors are not thread-safe).

How long it waits: a batch runs as soon as ``max_batch`` arrays are queued, or when the oldest has
waited ``wait_ms``, or at once when no other request for this model is being decoded (``expecting``
counts those): waiting then would only delay the lone request, since anything new must still cross
HTTP parsing and decoding. While the model runs, new arrays queue up, so under load batches form
without any waiting.

A batch whose call raises is run again one array at a time, so a request that breaks the model
fails alone and the others get their features (a model that fails on everything costs one extra
call per request; /health reports it).
"""
import collections
import contextlib
import logging
import threading
import time

log = logging.getLogger("ppufo.serve")


class BatcherClosed(RuntimeError):
    """The service is shutting down: the request was not run."""


class _Job:
    __slots__ = ("item", "arrived", "done", "result", "error")

    def __init__(self, item):
        self.item, self.arrived, self.done = item, time.monotonic(), threading.Event()
        self.result = self.error = None

    def finish(self, result=None, error=None):
        self.result, self.error = result, error
        self.done.set()


class Batcher:
    """``make_run()`` (called in the batcher's thread, again after it fails) -> ``run(items)``, which
    returns one row per item. ``batcher(item)`` blocks until that item's row is ready (or raises what
    ``run`` raised on it). ``close()`` stops the thread; queued items get BatcherClosed."""

    def __init__(self, make_run, max_batch=8, wait_ms=5.0, name="model"):
        if not (isinstance(max_batch, int) and max_batch >= 1):
            raise ValueError(f"max_batch={max_batch!r}: expected an integer >= 1")
        if not wait_ms >= 0:
            raise ValueError(f"batch_wait_ms={wait_ms!r}: expected milliseconds >= 0")
        self.max_batch, self.wait_ms, self.name = max_batch, wait_ms, name
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._expected = 0  # requests for this model being decoded: they will join shortly
        self._closed = False
        self._stats_lock = threading.Lock()
        self.stats = {"calls": 0, "requests": 0, "largest": 0, "failed_calls": 0}
        self._thread = threading.Thread(target=self._loop, args=(make_run,), name=f"ppufo-batcher-{name}",
                                        daemon=True)  # close() ends it; daemon only so a crash cannot hang exit
        self._thread.start()

    def __call__(self, item):
        with self.expecting() as submit:
            return submit(item)

    @contextlib.contextmanager
    def expecting(self):
        """``with batcher.expecting() as submit: ...decode...; row = submit(array)``: while the block
        decodes, the batcher knows an array is coming and may wait for it (up to wait_ms)."""
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"the {self.name} model's batcher is closed: the service is shutting down")
            self._expected += 1
        submitted = []

        def submit(item):
            job = _Job(item)
            with self._cond:
                self._expected -= 1
                submitted.append(job)
                if self._closed:
                    raise BatcherClosed(f"the {self.name} model's batcher is closed: the service is shutting down")
                self._queue.append(job)
                self._cond.notify()
            job.done.wait()
            if job.error is not None:
                raise job.error
            return job.result
        try:
            yield submit
        finally:
            if not submitted:  # the block failed before submitting (a bad image): stop waiting for it
                with self._cond:
                    self._expected -= 1
                    self._cond.notify()

    def _next_batch(self):
        """The next jobs to run (None once closed), per the waiting rule in the module's docstring."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            deadline = self._queue[0].arrived + self.wait_ms / 1000
            while len(self._queue) < self.max_batch and self._expected > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._closed:
                return None
            return [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]

    def _loop(self, make_run):
        run, jobs = None, []
        try:
            while (jobs := self._next_batch()) is not None:
                try:
                    if run is None:
                        run = make_run()
                    self._finish(jobs, run([j.item for j in jobs]))
                except Exception as e:
                    run = self._failed(jobs, run, e)
        finally:  # however the thread ends, no caller is left waiting for it
            for job in jobs or ():
                if not job.done.is_set():
                    job.finish(error=BatcherClosed(f"the {self.name} model's batcher stopped"))
            self.close(timeout=0)

    def _finish(self, jobs, rows):
        if len(rows) != len(jobs):
            raise RuntimeError(f"the model gave {len(rows)} rows for a batch of {len(jobs)}")
        with self._stats_lock:
            self.stats["calls"] += 1
            self.stats["requests"] += len(jobs)
            self.stats["largest"] = max(self.stats["largest"], len(jobs))
        for job, row in zip(jobs, rows):
            job.finish(result=row)

    def _failed(self, jobs, run, error):
        """A call raised: one job gets the error; several are run again one by one. -> the runner to keep."""
        with self._stats_lock:
            self.stats["failed_calls"] += 1
        if len(jobs) == 1 or run is None:
            for job in jobs:
                job.finish(error=error)
            return run
        log.warning("%s model: a batch of %d failed (%s: %s); running each request alone", self.name, len(jobs),
                    type(error).__name__, str(error)[:200])
        for job in jobs:
            try:
                self._finish([job], run([job.item]))
            except Exception as e:
                with self._stats_lock:
                    self.stats["failed_calls"] += 1
                job.finish(error=e)
        return run

    def snapshot(self):
        with self._stats_lock:
            stats = dict(self.stats)
        stats["mean_batch"] = round(stats["requests"] / stats["calls"], 2) if stats["calls"] else 0.0
        return {"max_batch": self.max_batch, "wait_ms": self.wait_ms, **stats}

    def close(self, timeout=30.0):
        """Stop taking arrays, fail the queued ones (BatcherClosed), let the running call finish and
        end the thread (waiting up to ``timeout`` s for it)."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            job.finish(error=BatcherClosed(f"the {self.name} model's batcher closed before this request ran: "
                                           f"the service is shutting down"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self):
        return self._thread.is_alive()
