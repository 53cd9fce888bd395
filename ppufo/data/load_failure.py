"""An error raised while loading a batch travels as data, in its batch's place, to the loop that
iterates, where it is raised as itself.

The loader's dataset wrapper (CatchesLoadErrors) never raises: a failing item becomes a
LoadFailure, plain strings. ``collate_or_fail`` turns a batch holding one (or a batch collate
cannot make) into a failure batch: a dict of strings and one small array, which is what Paddle's
_flatten_batch carries from a worker to the parent, through shared memory or a pipe, and orders
by batch index like any batch. The loader's iterator raises ``LoadFailure.of_batch(b).error()``.
"""
import sys
import traceback

import numpy as np
import paddle

from ..utils.errors import ConfigError, DataError
from .batch_transforms import collate

FAILED = "ppufo_load_failure"


class LoadFailure:
    """An error raised while loading: ``kind`` its type as ``module:qualname``, ``message`` its text."""

    def __init__(self, kind, message):
        self.kind, self.message = kind, message

    @classmethod
    def caught(cls, error):
        """The failure of ``error``, caught in this process. ppufo's own errors name the file or
        record: their message is kept, plus the worker; others carry their traceback, as Paddle
        reports a worker's error."""
        info = paddle.io.get_worker_info()
        worker = f"worker({info.id})" if info is not None else None
        if isinstance(error, (ConfigError, DataError)):
            message = str(error) + (f" (in loader {worker})" if worker else "")
        else:
            message = (f"DataLoader {worker or 'thread'} caught {type(error).__name__} with message:\n"
                       + "".join(traceback.format_exception(error)))
        return cls(f"{type(error).__module__}:{type(error).__qualname__}", message)

    def batch(self):
        """This failure in a batch's place (the array: Paddle's reader queue carries arrays)."""
        return {FAILED: self.message, "kind": self.kind, "ballast": np.zeros([1], np.uint8)}

    @classmethod
    def of_batch(cls, batch):
        """The failure a batch from the loader stands for, or None."""
        if isinstance(batch, dict) and FAILED in batch:
            return cls(batch["kind"], batch[FAILED])
        return None

    def error(self):
        """The exception to raise: the original type with the message, or a RuntimeError naming
        the type when that type is not loaded here or cannot be built from a message."""
        module, _, name = self.kind.partition(":")
        cls = sys.modules.get(module)
        for part in name.split("."):
            cls = getattr(cls, part, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(self.message)
            except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError takes five arguments
                pass
        return RuntimeError(f"{name}: {self.message}")


STOPPED = LoadFailure("builtins:RuntimeError", "the loader was stopped before this batch was loaded")


class CatchesLoadErrors(paddle.io.Dataset):
    """``dataset`` whose items are never exceptions: a LoadFailure instead. Once ``stopped`` (a
    shared flag, seen by the workers) its items are not loaded at all (STOPPED)."""

    def __init__(self, dataset, stopped):
        self.dataset, self.stopped = dataset, stopped

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if self.stopped.value:
            return STOPPED
        try:
            return self.dataset[index]
        except Exception as e:  # noqa: BLE001 - raised by the loop that iterates
            return LoadFailure.caught(e)


def collate_or_fail(samples):
    """The batch of ``samples`` (batch_transforms.collate), or the failure batch of the first
    that failed, or of collate's own error."""
    for s in samples:
        if isinstance(s, LoadFailure):
            return s.batch()
    try:
        return collate(samples)
    except Exception as e:  # noqa: BLE001
        return LoadFailure.caught(e).batch()
