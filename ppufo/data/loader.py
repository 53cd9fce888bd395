"""Build the mixed-batch training loader and plain evaluation loaders from the config."""
import ctypes
import functools
import gc
import math
import multiprocessing
import os
import signal
import sys

import paddle

from ..utils.device import local_processes, set_cpu_threads
from ..utils.errors import ConfigError
from ..utils.logger import get_logger
from .datasets import build_source
from .datasets.base import ImageDataset
from .datasets.multitask import MultiTaskDataset
from .load_failure import CatchesLoadErrors, LoadFailure, collate_or_fail
from .samplers import SAMPLERS
from .to_device import ToDevice, device_place
from .transforms import build_transforms, default_eval_transforms, default_train_transforms


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


class DataLoader:
    """Batches of a map-style dataset through paddle.io.DataLoader's public API, with:

    - load errors raised by the loop: an error while loading a batch (a sample's, or collate's;
      in the reading thread with num_workers 0, in a worker otherwise) is raised by the loop
      that iterates, as its own type with its message (load_failure), after every batch before
      it, in order, with any number of workers: it travels in its batch's place, and Paddle
      delivers batches in order. Batches after it are not delivered; the iterator stops.
    - ``batch_transform``: the batch part of Compose.split(), the dataset's transform being the
      sample part; it runs on each batch's first field (the images: items are (image, ...)
      tuples) where Paddle put the batch. Samples then travel as uint8: the per-sample path's
      batches for a quarter of the bytes (plus any erasing noise).
    - ``device``: a device Place (Global.device's: device_place) the first ``device_fields``
      fields of each batch move to, without blocking, before the batch transform (to_device.py),
      so that it runs there; None leaves batches where Paddle put them (for a GPU: pinned host
      memory, where the batch transform runs numpy).
    - workers that run one thread, leave the parent's process group and die with it
      (one_thread_worker).

    ``options`` are paddle.io.DataLoader's (use_shared_memory, prefetch_factor, timeout...)."""

    def __init__(self, dataset, batch_sampler=None, batch_size=1, shuffle=False, drop_last=False, *,
                 batch_transform=None, device=None, device_fields=1, num_workers=0, persistent_workers=False,
                 **options):
        if persistent_workers:
            raise ValueError("ppufo's DataLoader does not support persistent_workers")
        if isinstance(dataset, paddle.io.IterableDataset) or not hasattr(dataset, "__len__"):
            raise TypeError(f"ppufo's DataLoader takes a map-style dataset, got {type(dataset).__name__}")
        self.dataset, self.batch_transform, self.num_workers = dataset, batch_transform, num_workers
        self.device, self.device_fields = device, device_fields
        self.batch_sampler = batch_sampler if batch_sampler is not None else paddle.io.BatchSampler(
            dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
        self.options = dict(options)
        self.options.setdefault("worker_init_fn", functools.partial(one_thread_worker, parent_pid=os.getpid()))

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        return LoaderIterator(self)


class UntilStopped:
    """The batches of ``batch_sampler`` until ``stopped`` is set."""

    def __init__(self, batch_sampler, stopped):
        self.batch_sampler, self.stopped = batch_sampler, stopped

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            if self.stopped.value:
                return
            yield batch


class LoaderIterator:
    """One pass of a DataLoader over a paddle.io.DataLoader built for it: see DataLoader."""

    def __init__(self, loader):
        self.batch_transform, self.device_fields = loader.batch_transform, loader.device_fields
        self.to_device = ToDevice(loader.device) if loader.device is not None else None
        self.stopped = multiprocessing.RawValue("b", 0)  # shared with the workers forked below
        inner = paddle.io.DataLoader(
            CatchesLoadErrors(loader.dataset, self.stopped), collate_fn=collate_or_fail,
            batch_sampler=UntilStopped(loader.batch_sampler, self.stopped), num_workers=loader.num_workers,
            **loader.options)
        # The workers are forked: a child inherits this process's garbage, and collecting it there
        # runs native destructors of objects whose threads live only here (a Paddle reader of an
        # abandoned iterator: its pthread_cond_destroy waits forever for a waiter that is not in the
        # child). Freeze what exists now, so a child's gc never looks at it (gc.freeze's documented
        # use before fork); the parent unfreezes at once.
        gc.freeze()
        try:
            self.inner = iter(inner)
        finally:
            gc.unfreeze()
        self.length = len(inner)

    def __iter__(self):
        return self

    def __len__(self):
        return self.length

    def __next__(self):
        if self.inner is None:
            raise StopIteration
        try:
            batch = next(self.inner)
        except StopIteration:
            self.inner = None  # Paddle has stopped its thread and workers, as at every end of data
            raise
        except BaseException:
            self.close()
            raise
        failure = LoadFailure.of_batch(batch)
        if failure is not None:
            self.close()
            raise failure.error()
        try:
            return finish_batch(batch, self.to_device, self.device_fields, self.batch_transform)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Stop now: no more batches are sent out, the workers skip the samples of those in flight,
        and what they send is read and dropped until Paddle's iterator ends, which stops its thread
        and workers as at the end of data (no private Paddle call). On an iterator already broken
        (a worker killed) Paddle's reading thread has ended: dropping the iterator stops the rest."""
        inner, self.inner = self.inner, None
        if inner is None:
            return
        self.stopped.value = 1
        try:
            for _ in inner:
                pass
        except Exception:  # noqa: BLE001 - best effort while another error propagates
            pass


def finish_batch(batch, to_device, fields, batch_transform):
    """``batch`` as the loop gets it: its first ``fields`` fields moved by ``to_device`` (a
    ToDevice, or None: they stay), then its images (field 0) finished by ``batch_transform``."""
    if to_device is None and batch_transform is None:
        return batch
    if not isinstance(batch, list):
        raise TypeError(f"DataLoader: with a batch_transform or a device the dataset's items must be (image, ...) "
                        f"tuples, got batches of {type(batch).__name__}")
    if to_device is not None:
        batch[:fields] = to_device(batch[:fields])
    if batch_transform is not None:
        batch[0] = batch_transform(batch[0])
    return batch


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
    tasks contiguous in config order; images and labels on Global.device. The datasets'
    transform is the sample part of the training transforms (see loader_parts)."""
    transform, batch_transform = loader_parts(train_transforms(config), "DataLoader.Train.transforms")
    task_sets = build_task_train_sets(config, transform)
    check_sample_shape(config, task_sets)
    batch_sampler = build_batch_sampler(config, task_sets, rank, world_size, start_iter)
    workers = config["DataLoader"]["Train"]["num_workers"]
    size = sum(batch_sampler.task_counts.values())
    loader = DataLoader(MultiTaskDataset(task_sets), batch_sampler=batch_sampler, batch_transform=batch_transform,
                        device=device_place(config["Global"]["device"]), device_fields=2,  # images, labels
                        num_workers=workers,
                        use_shared_memory=shared_memory_fits(batch_bytes(config, batch_transform, size), workers,
                                                             "DataLoader.Train"))
    return loader, task_sets


_said = set()


def say_once(message, key=None):
    """Log ``message`` unless this process has said it (or another with the same ``key``)."""
    key = message if key is None else key
    if key not in _said:
        _said.add(key)
        get_logger().info(message)


def loader_parts(transform, where):
    """(the datasets' transform, the loader's batch_transform) for a Compose: its sample and
    batch parts (Compose.split: workers send uint8 images), or the Compose itself and None when
    it cannot be split (workers send float32 images). Logs (once) which."""
    parts = transform.split()
    if isinstance(parts, str):
        say_once(f"{where}: normalising per sample in the workers (float32), as {parts}")
        return transform, None
    names = ", ".join(type(op).__name__ for op in [parts[1].norm, *parts[1].erasers])
    say_once(f"{where}: workers send uint8 images; {names} run on each batch after the copy")
    return parts


def eval_parts(config):
    """loader_parts of the evaluation transforms: the test sets' transform, and the batch
    transform to give build_eval_loader."""
    return loader_parts(eval_transforms(config), "DataLoader.Eval.transforms")


def batch_bytes(config, batch_transform, size):
    """The most bytes a worker sends per batch of ``size`` images."""
    pixels = size * math.prod(config["Global"]["image_shape"])
    if batch_transform is None:
        return 4 * pixels
    return int(pixels * (1 + sum(4 * e.sh for e in batch_transform.erasers if e.mode == "pixel")))  # + float32 noise


def shared_memory_fits(nbytes, workers, what="DataLoader"):
    """Workers hand batches over in /dev/shm when it holds what the loaders of this machine's
    processes keep in flight (2 per worker + 2 buffered each), else through a pipe. Logs, once per
    ``what`` and outcome, the shared memory needed and found; on a pipe, how to give a container
    more (Docker's default /dev/shm is 64 MB; the paper's 8 ranks want about 44 GiB)."""
    if workers == 0:
        return False
    per_process = 2 * workers + 2
    need = per_process * nbytes * local_processes()
    try:
        st = os.statvfs("/dev/shm")
        free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    except OSError:
        free = size = 0
    fits = free >= need
    mb = 2 ** 20
    found = (f"/dev/shm has {free / mb:.0f} MB free (of {size / mb:.0f} MB), the loaders of this machine may hold "
             f"{need / mb:.0f} MB ({local_processes()} process(es) x {per_process} batches x {nbytes / mb:.1f} MB)")
    if fits:
        say_once(f"{what}: shared memory on: {found}", key=(what, fits))
    else:
        say_once(f"{what}: shared memory off: {found}; workers send batches through a pipe (slower). In a "
                 f"container give it more: docker run --shm-size={math.ceil(need / 2 ** 30)}g, or --ipc=host "
                 f"(the host's /dev/shm)", key=(what, fits))
    return fits


def check_sample_shape(config, task_sets):
    """The backbone runs once on all tasks' images, so every transformed image must have
    Global.image_shape; catch a mismatched Resize before training starts."""
    want = list(config["Global"]["image_shape"])
    for task, ds in task_sets.items():
        got = list(ds[(0, 0)][0].shape)
        if got != want:
            raise ConfigError(f"DataLoader.Train.transforms give {task} images of shape {got}, but "
                              f"Global.image_shape is {want}; make the Resize/RandomCrop sizes match")


def build_eval_loader(dataset, config, batch_transform):
    """The evaluation loader of ``dataset``, whose transform is eval_parts(config)[0];
    ``batch_transform`` is eval_parts(config)[1]."""
    ecfg = config["DataLoader"]["Eval"]
    nbytes = batch_bytes(config, batch_transform, ecfg["batch_size"])
    return DataLoader(dataset, batch_size=ecfg["batch_size"], shuffle=False, drop_last=False,
                      batch_transform=batch_transform, device=device_place(config["Global"]["device"]),
                      num_workers=ecfg["num_workers"],
                      use_shared_memory=shared_memory_fits(nbytes, ecfg["num_workers"], "DataLoader.Eval"))
