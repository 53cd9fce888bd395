"""Build the mixed-batch training loader and plain evaluation loaders from the config."""
import ctypes
import functools
import gc
import math
import os
import signal
import sys

import paddle
from paddle.io.dataloader.dataloader_iter import _DataLoaderIterMultiProcess, _DataLoaderIterSingleProcess
from paddle.io.dataloader.worker import _WorkerException

from ..utils.device import local_processes, set_cpu_threads
from ..utils.errors import ConfigError, DataError
from ..utils.logger import get_logger
from .datasets import build_source
from .datasets.base import ImageDataset
from .datasets.multitask import MultiTaskDataset
from .batch_transforms import collate, finish, is_lean
from .samplers import SAMPLERS
from .transforms import build_transforms, default_eval_transforms, default_train_transforms, uint8_samples


def image_hw(config):
    return list(config["Global"]["image_shape"][1:])


def train_transforms(config):
    items = config["DataLoader"]["Train"]["transforms"]
    if items:
        return build_transforms(items, where="DataLoader.Train.transforms")
    return default_train_transforms(image_hw(config))


def eval_transforms(config):
    items = config["DataLoader"]["Eval"]["transforms"]
    if items:
        return build_transforms(items, where="DataLoader.Eval.transforms")
    return default_eval_transforms(image_hw(config))


def one_thread_worker(worker_id, parent_pid=None):
    """A loader worker decodes and augments one image at a time: one Paddle thread each, so
    N workers add N busy cores next to Global.cpu_threads, not N times as many. On Linux the
    worker is also killed when the process that started it dies (prctl PR_SET_PDEATHSIG), so
    a crashed or killed trainer leaves no workers behind. A worker leaves its parent's process
    group: Ctrl-C (the terminal's whole group) and a launcher's or study's SIGTERM to the group
    reach the parent only, which stops its workers itself; a worker killed by them instead would
    end the trainer mid-step (Paddle's SIGCHLD handler), before its checkpoint (engine/interrupt.py)."""
    exit_with_parent(parent_pid)
    own_process_group()
    set_cpu_threads(1)


def own_process_group():
    """Move this process into a process group of its own (POSIX; a no-op elsewhere)."""
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:
            pass


def exit_with_parent(parent_pid=None):
    """Ask Linux to SIGKILL this process when its parent dies; exit at once if the parent
    (``parent_pid``) is already gone. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


class UInt8Samples(paddle.io.Dataset):
    """``dataset`` read inside uint8_samples(): its Compose stops before Normalize."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        with uint8_samples():
            return self.dataset[index]


class DataLoader(paddle.io.DataLoader):
    """paddle.io.DataLoader whose iterators hand an error raised while loading a batch (in the
    reading thread with num_workers 0, in a worker process otherwise) to the loop that
    iterates, as the original exception, instead of hanging or raising Paddle's "Blocking
    queue is killed"; the iterator then shuts its thread and workers down (close()).

    Guarantee: every batch before the failing one is delivered, in order, then the error is
    raised, with any number of workers (a worker's error waits for its batch's turn, as a
    batch would; Paddle itself raises it as soon as it arrives and drops the batches queued
    before it). Batches after the failing one are not delivered.

    With ``lean`` (and no collate_fn of the caller's) samples travel as uint8 and Normalize /
    RandomErasing run on the batch where Paddle put it (batch_transforms): the batches are the
    per-sample path's, for a quarter of the bytes (plus any erasing noise)."""

    def __init__(self, dataset, *args, lean=True, **kwargs):
        kwargs.setdefault("worker_init_fn", functools.partial(one_thread_worker, parent_pid=os.getpid()))
        if lean and kwargs.get("collate_fn") is None and not isinstance(dataset, paddle.io.IterableDataset):
            dataset, kwargs["collate_fn"] = UInt8Samples(dataset), collate
        super().__init__(dataset, *args, **kwargs)

    def __iter__(self):
        if getattr(self, "_persistent_workers", False):
            raise ValueError("ppufo's DataLoader does not support persistent_workers")
        return LoaderIterator(_SingleProcessIter(self) if self.num_workers == 0 else _MultiProcessIter(self))


def shorten_worker_error(error):
    """Paddle re-raises a worker's exception as ``type(message with the worker's traceback)``;
    for ppufo's own errors (DataError, ConfigError) keep just the message, which names the
    file or record, prefixed with the worker."""
    text = str(error)
    if not isinstance(error, (ConfigError, DataError)) or not text.startswith("DataLoader worker(") \
            or "Traceback" not in text:
        return error
    last = [line for line in text.splitlines() if line.strip()][-1]
    prefix = f"{type(error).__module__}.{type(error).__name__}: "
    worker = text.split(")", 1)[0][len("DataLoader "):] + ")"
    return type(error)(f"{last[len(prefix):] if last.startswith(prefix) else last} (in loader {worker})")


class _KeepsLoadError:
    """Mixin for Paddle's iterators: an error raised while reading a batch is kept (load_error)
    and ends the reading thread as the end of data would, so the batches read before it are
    still delivered; LoaderIterator then raises it. Guarded before the thread starts: patching
    a running iterator would race with its prefetching (an error in a batch read before the patch
    killed the thread and left the loop waiting forever)."""
    load_error = None

    def load_failed(self, error):
        if self.load_error is None:
            self.load_error = shorten_worker_error(error)
        self._exit_thread_expectedly()  # closes the queue (not kill: queued batches stay)


class _SingleProcessIter(_KeepsLoadError, _DataLoaderIterSingleProcess):
    def _init_thread(self):
        fetch = self._dataset_fetcher.fetch

        def guarded_fetch(*args, **kwargs):
            try:
                return fetch(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - raised by LoaderIterator in the loop
                self.load_failed(e)
                return None  # the thread loop stops on None
        self._dataset_fetcher.fetch = guarded_fetch
        super()._init_thread()


class _FailedBatch:
    """A worker's error standing in the place of the batch it could not make."""

    def __init__(self, error):
        self.error = error


class _WorkerErrorsInOrder:
    """The workers' result queue as the reading thread sees it: a worker's error
    (_WorkerException) comes as a _FailedBatch in the place of its batch, so Paddle orders it
    with the batches instead of killing the blocking queue (dropping the batches read before
    it, which the loop has not taken yet) the moment it arrives."""

    def __init__(self, queue):
        self.queue = queue

    def get(self, *args, **kwargs):
        data = self.queue.get(*args, **kwargs)
        if isinstance(data, tuple) and len(data) == 3 and isinstance(data[1], _WorkerException):
            return data[0], _FailedBatch(data[1]), data[2]
        return data

    def __getattr__(self, name):
        return getattr(self.queue, name)


class _MultiProcessIter(_KeepsLoadError, _DataLoaderIterMultiProcess):
    def _init_workers(self):
        # The workers are forked: a child inherits this process's garbage, and collecting it
        # there runs native destructors of objects whose threads live only here (a Paddle
        # reader of an earlier, abandoned iterator: its pthread_cond_destroy waits forever for
        # a waiter that is not in the child). Freeze what exists now, so a child's gc never
        # looks at it (gc.freeze's documented use before fork); the parent unfreezes at once.
        gc.freeze()
        try:
            super()._init_workers()
        finally:
            gc.unfreeze()
        self._data_queue = _WorkerErrorsInOrder(self._data_queue)

    def _get_data(self):  # a worker's error is re-raised here, in the reading thread
        try:
            batch = super()._get_data()
            if isinstance(batch, _FailedBatch):  # its turn: the batches before it are queued
                batch.error.reraise()
            return batch
        except Exception as e:  # noqa: BLE001
            self.load_failed(e)
            return None


class LoaderIterator:
    """Wraps one of the guarded Paddle iterators above: see DataLoader."""

    def __init__(self, inner):
        self.inner = inner
        self.closed = False

    @property
    def error(self):
        return self.inner.load_error

    def __iter__(self):
        return self

    def __next__(self):
        if self.closed:
            raise StopIteration
        try:
            batch = next(self.inner)
            if is_lean(batch):  # samples that are just an image (collate: a bare LeanImage)
                return finish(batch)
            if isinstance(batch, list) and batch and is_lean(batch[0]):
                batch[0] = finish(batch[0])
            return batch
        except StopIteration:
            if self.error is None:
                raise
            self.close()
            raise self.error.with_traceback(self.error.__traceback__) from None
        except Exception:
            self.close()
            if self.error is not None:
                raise self.error.with_traceback(self.error.__traceback__) from None
            raise

    def __len__(self):
        return len(self.inner)

    def close(self, timeout=5):
        """Stop the reading thread and worker processes (waiting up to ``timeout`` s each), and
        free the native reader now: an abandoned iterator often lives on in a reference cycle
        (the error's traceback holds the loop's frame), and its reader's idle thread pool must
        be destroyed here, in the process where that thread runs."""
        inner, self.closed = self.inner, True
        shutdown = getattr(inner, "_try_shutdown_all", None)
        if shutdown is None:
            return
        try:
            shutdown(timeout) if hasattr(inner, "_workers") else shutdown()
            reader = getattr(inner, "_reader", None)
            if reader is not None:  # as Paddle's own end of data does; the reading thread never uses it
                reader.shutdown()
                inner._reader = None
        except Exception:  # noqa: BLE001 - best effort while another error propagates
            pass


def build_task_train_set(config, task, transform=None):
    """ImageDataset of ``task``'s merged training sources, labels disjoint per source."""
    tcfg = config["Tasks"][task]
    if not tcfg["datasets"]:
        raise ConfigError(f"Tasks.{task}.datasets: empty; give at least one {{name, root}}")
    parts = []
    for i, dcfg in enumerate(tcfg["datasets"]):
        source = build_source(dcfg, config["Global"]["data_root"], where=f"Tasks.{task}.datasets.{i}")
        parts.append((source, source.train()))
    ds = ImageDataset(parts, transform=transform, relabel=True)
    desc = ", ".join(f"{s.name} {len(r)} imgs" for s, r in parts)
    get_logger().info(f"task {task}: {len(ds)} images, {ds.num_classes} ids ({desc})")
    return ds


def build_task_train_sets(config, transform=None):
    """{task: ImageDataset} for every task of the config."""
    return {task: build_task_train_set(config, task, transform) for task in config["Tasks"]}


def build_batch_sampler(config, task_sets, rank=0, world_size=1, start_iter=0):
    g = config["Global"]
    task_samplers = {}
    for task, ds in task_sets.items():
        tcfg = config["Tasks"][task]
        where = f"Tasks.{task}.sampler"
        try:
            task_samplers[task] = SAMPLERS.build(
                tcfg["sampler"], where=where, labels=ds.labels, batch_size=tcfg["batch_size"],
                seed=g["seed"], rank=rank, world_size=world_size)
        except ConfigError as e:
            raise ConfigError(f"Tasks.{task}: {e}") from None
    offsets = MultiTaskDataset(task_sets).offsets
    return SAMPLERS.build(config["DataLoader"]["Train"]["batch_sampler"],
                          where="DataLoader.Train.batch_sampler", task_samplers=task_samplers,
                          offsets=offsets, max_iters=g["max_iters"], start_iter=start_iter,
                          seed=g["seed"], rank=rank)


def build_train_loader(config, rank=0, world_size=1, start_iter=0):
    """Returns (loader, {task: ImageDataset}). Each batch: (images, labels, camids, task_ids),
    tasks contiguous in config order."""
    transform = train_transforms(config)
    task_sets = build_task_train_sets(config, transform)
    check_sample_shape(config, task_sets)
    batch_sampler = build_batch_sampler(config, task_sets, rank, world_size, start_iter)
    workers = config["DataLoader"]["Train"]["num_workers"]
    size = sum(batch_sampler.task_counts.values())
    loader = DataLoader(MultiTaskDataset(task_sets), batch_sampler=batch_sampler, num_workers=workers,
                        use_shared_memory=shared_memory_fits(
                            batch_bytes(config, transform, size, "DataLoader.Train.transforms"), workers))
    return loader, task_sets


_said = set()


def say_once(message):
    if message not in _said:
        _said.add(message)
        get_logger().info(message)


def batch_bytes(config, transform, size, where):
    """The most bytes a worker sends per batch of ``size`` images; logs (once) when the
    transforms keep the per-sample float path."""
    pixels = size * math.prod(config["Global"]["image_shape"])
    split = transform.split()
    if isinstance(split, str):
        say_once(f"{where}: normalising per sample in the workers (float32), as {split}")
        return 4 * pixels
    say_once(f"{where}: workers send uint8 images; {', '.join(type(op).__name__ for op in [split[1], *split[2]])} "
             f"run on each batch after the copy")
    return int(pixels * (1 + sum(4 * e.sh for e in split[2] if e.mode == "pixel")))  # + float32 noise


def shared_memory_fits(nbytes, workers):
    """Workers hand batches over in /dev/shm when it holds what the loaders of this machine's
    processes keep in flight (2 per worker + 2 buffered each; Docker's default /dev/shm is
    64 MB), else through a pipe."""
    if workers == 0:
        return False
    need = (2 * workers + 2) * nbytes * local_processes()
    try:
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = 0
    if free < need:
        say_once(f"DataLoader: shared memory off: /dev/shm has {free / 2 ** 20:.0f} MB free, the loader may "
                 f"hold {need / 2 ** 20:.0f} MB; workers send batches through a pipe (slower; enlarge "
                 f"/dev/shm, e.g. docker run --shm-size)")
    return free >= need


def check_sample_shape(config, task_sets):
    """The backbone runs once on all tasks' images, so every transformed image must have
    Global.image_shape; catch a mismatched Resize before training starts."""
    want = list(config["Global"]["image_shape"])
    for task, ds in task_sets.items():
        got = list(ds[(0, 0)][0].shape)
        if got != want:
            raise ConfigError(f"DataLoader.Train.transforms give {task} images of shape {got}, but "
                              f"Global.image_shape is {want}; make the Resize/RandomCrop sizes match")


def build_eval_loader(dataset, config):
    ecfg = config["DataLoader"]["Eval"]
    nbytes = batch_bytes(config, eval_transforms(config), ecfg["batch_size"], "DataLoader.Eval.transforms")
    return DataLoader(dataset, batch_size=ecfg["batch_size"], shuffle=False, drop_last=False,
                      num_workers=ecfg["num_workers"], use_shared_memory=shared_memory_fits(nbytes, ecfg["num_workers"]))
