"""A readers-writer lock: searches run side by side, a gallery change runs alone."""
import threading
from contextlib import contextmanager


class ReadWriteLock:
    """Many readers at once, or one writer. A waiting writer holds back new readers, so a steady
    stream of searches cannot starve an update. Not re-entrant: never nest ``read`` in ``read``."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = self._writers_waiting = 0
        self._writing = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
