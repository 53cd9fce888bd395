"""The uint8 split: the dataset's transform is the sample part of Compose.split() (workers send uint8
images), the loader's batch_transform its batch part (Normalize and RandomErasing on the batch), and
the batches equal the per-sample float path's (the whole Compose per sample, stacked) bit for bit."""
import copy
import logging
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from ppufo.data import transforms as T
from ppufo.data.batch_transforms import LeanImage, collate, is_lean
from ppufo.data.datasets.base import ImageDataset, Record
from ppufo.data.loader import (DataLoader, batch_bytes, build_batch_sampler, build_eval_loader, build_task_train_sets,
                               build_train_loader, eval_parts, eval_transforms, loader_parts, train_transforms)
from ppufo.data.datasets.multitask import MultiTaskDataset
from ppufo.utils.errors import DataError
from ppufo.utils.logger import get_logger

QUICKSTART = [{"Resize": {"size": [64, 64], "interpolation": "bilinear"}}, {"RandomHorizontalFlip": {"prob": 0.5}},
              {"Normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}]
PAPER = [{"AutoAugment": {"prob": 0.5}}, {"Resize": {"size": [64, 64], "interpolation": "bicubic"}},
         {"Pad": {"padding": 10}}, {"RandomCrop": {"size": [64, 64]}}, {"RandomHorizontalFlip": {"prob": 0.5}},
         {"Normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}, {"RandomErasing": {"prob": 0.5, "mode": "pixel"}}]
ERASERS = PAPER[:5] + [{"Normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
                       {"RandomErasing": {"prob": 0.7, "mode": "rand", "sl": 0.1, "sh": 0.3}},
                       {"RandomErasing": {"prob": 1.0, "mode": "const", "value": [1.0, -2.0, 3.0]}},
                       {"RandomErasing": {"prob": 0.5, "mode": "pixel", "r1": 0.5}}]


class Photos:
    """Person-like (128x64) and face-like (50x50) noise images; record key ``bad`` cannot be read."""
    name, root = "photos", "-"

    def __init__(self, bad=None):
        self.bad = bad

    def read(self, record):
        if record.key == self.bad:
            raise DataError(f"photos: cannot decode image img_{record.key}.jpg")
        rs = np.random.RandomState(record.key)
        h, w = (128, 64) if record.key % 2 else (50, 50)
        return Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8))


def dataset(items, n=24, bad=None):
    return ImageDataset([(Photos(bad), [Record(i, i % 6, 0) for i in range(n)])], transform=T.build_transforms(items))


def batches(n, size=24, seed=0):
    return [[(i, seed * 10 ** 6 + 1000 * b + i) for i in range(size)] for b in range(n)]


def reference(ds, batch):
    """The per-sample float path: each sample's transforms on its own seed, stacked."""
    return np.stack([ds[i][0] for i in batch])


def split(ds):
    """(``ds`` with the sample part of its Compose as its transform, the batch part)."""
    sample, batch = ds.transform.split()
    lean = copy.copy(ds)
    lean.transform = sample
    return lean, batch


def lean(ds, batch):
    """The collated batch a worker sends on the uint8 path."""
    return collate([split(ds)[0][i] for i in batch])


def loader(ds, batches, **options):
    """The uint8-split loader of ``ds`` (built with the float path's Compose)."""
    samples, batch_part = split(ds)
    return DataLoader(samples, batch_sampler=batches, batch_transform=batch_part, **options)


def as_tensors(field):
    if isinstance(field, dict):
        return {k: as_tensors(v) for k, v in field.items()}
    if isinstance(field, list):
        return [as_tensors(v) for v in field]
    return paddle.to_tensor(field) if isinstance(field, np.ndarray) else field


def nbytes(field):
    if isinstance(field, dict):
        return sum(nbytes(v) for v in field.values())
    if isinstance(field, list):
        return sum(nbytes(v) for v in field)
    return field.nbytes if isinstance(field, np.ndarray) else 0


@pytest.mark.parametrize("items", [QUICKSTART, PAPER, ERASERS], ids=["quickstart", "paper", "erasing_modes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lean_batches_equal_float_path(items, seed):
    """Through the loader (finished with numpy in host memory) and with the device ops (as on a
    GPU, run here on the CPU): bit-equal to the per-sample float path."""
    ds = dataset(items)
    for b in batches(2, seed=seed):
        ref = reference(ds, b)
        batch = lean(ds, b)[0]
        assert is_lean(batch) and batch["lean_uint8"].dtype == np.uint8 and batch["lean_uint8"].shape == (24, 64, 64, 3)
        out = next(iter(loader(ds, [b])))[0]
        assert out.dtype == paddle.float32
        np.testing.assert_array_equal(out.numpy(), ref)
        t, part = as_tensors(batch), split(ds)[1]
        np.testing.assert_array_equal(part.on_device(t).numpy(), ref)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("items", [QUICKSTART, PAPER], ids=["without_erasing", "with_erasing"])
def test_split_loader_equals_float_loader(items, workers):
    """Whole passes, batch for batch: the uint8-split loader and the float loader (the whole
    Compose per sample in the workers, stacked, no batch transform) give the same bytes; the
    split one moves uint8 images."""
    ds = dataset(items, n=48)
    bs = batches(5, size=12, seed=3)
    floats = [x.numpy() for x, _, _ in DataLoader(ds, batch_sampler=bs, num_workers=workers)]
    split_ = [x.numpy() for x, _, _ in loader(ds, bs, num_workers=workers)]
    assert len(floats) == len(split_) == 5
    for a, b in zip(floats, split_):
        assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()
    assert isinstance(split(ds)[0][bs[0][0]][0], LeanImage)


def test_erasing_is_drawn_per_sample_as_before():
    """p0.5 pixel erasing hits about half the samples, each box filled with that sample's noise."""
    ds = dataset(PAPER, n=64)
    b = batches(1, size=64, seed=7)[0]
    params = lean(ds, b)[0]["erase"][0]["params"]
    erased = params[:, 2] > 0
    assert 20 < erased.sum() < 44
    ref = reference(ds, b)
    plain = np.stack([T.Compose(ds.transform.ops[:-1])(ds.read(i), random.Random(s)) for i, s in b])
    assert [not np.array_equal(r, p) for r, p in zip(ref, plain)] == list(erased)


def test_bytes_per_batch():
    """uint8 images are a quarter of the float32 batch; pixel erasing adds its float32 noise."""
    b = batches(1, size=64)[0]
    for items, low, high in ((QUICKSTART, 3.99, 4.0), (PAPER, 2.5, 3.9)):
        ds = dataset(items, n=64)
        ratio = reference(ds, b).nbytes / nbytes(lean(ds, b))
        assert low <= ratio <= high, (items[-1], ratio)


def test_worker_with_shared_memory_then_its_error():
    """Through a worker process and /dev/shm: the same batches, all three, then a bad image ends
    the loop with the worker's error, shortened to its message, as on the float path."""
    ds = dataset(PAPER, n=24, bad=23)
    bs = batches(3, size=8) + [[(23, 5)]]
    refs = [reference(ds, b) for b in bs[:3]]
    seen = []
    with pytest.raises(DataError, match="img_23.jpg") as e:
        for x, _, _ in loader(ds, bs, num_workers=1, use_shared_memory=True):
            seen.append(x.numpy())
    assert len(seen) == 3 and "Traceback" not in str(e.value) and "(in loader worker" in str(e.value)
    for x, ref in zip(seen, refs):
        np.testing.assert_array_equal(x, ref)


class Scale(T.Op):
    takes = gives = T.CHW

    def __call__(self, x, rng=None):
        return x * 2.0


@pytest.mark.parametrize("ops, why", [
    (T.build_transforms(QUICKSTART[:1] + QUICKSTART[2:] + QUICKSTART[1:2]).ops, "RandomHorizontalFlip after Normalize"),
    (T.build_transforms(PAPER).ops[:6] + [Scale()], "Scale after Normalize"),
])
def test_lists_that_cannot_be_split_keep_the_float_path(ops, why):
    tf = T.Compose(ops)
    assert why in tf.split()
    ds = dataset(QUICKSTART)
    ds.transform = tf
    b = batches(1)[0]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    get_logger().addHandler(handler)
    try:
        transform, batch_transform = loader_parts(tf, "W")
    finally:
        get_logger().removeHandler(handler)
    assert transform is tf and batch_transform is None
    assert any(why in r.getMessage() and r.getMessage().startswith("W: ") for r in records)
    assert not is_lean(collate([ds[i] for i in b])[0])
    out = next(iter(DataLoader(ds, batch_sampler=[b], batch_transform=batch_transform)))[0]
    np.testing.assert_array_equal(out.numpy(), reference(ds, b))
    assert batch_bytes({"Global": {"image_shape": [3, 64, 64]}}, None, 10) == 4 * 10 * 3 * 64 * 64


def test_train_and_eval_loaders_give_the_float_path_batches(make_config):
    """build_train_loader (mixed tasks, per-sample seeds) and build_eval_loader on the paper's
    transforms at 32x32: the batches the trainer and evaluator get are the float path's."""
    items = [dict(op) for op in PAPER]
    items[1] = {"Resize": {"size": [32, 32], "interpolation": "bicubic"}}
    items[3] = {"RandomCrop": {"size": [32, 32]}}
    config = make_config()
    config["DataLoader"]["Train"]["transforms"] = items
    train_loader, task_sets = build_train_loader(config)
    assert isinstance(task_sets["person"][(0, 0)][0], LeanImage)  # the sample part
    indices = build_batch_sampler(config, task_sets)
    mixed = MultiTaskDataset(build_task_train_sets(config, train_transforms(config)))  # whole Compose per sample
    for (images, labels, _, task_ids), idx, _ in zip(train_loader, indices, range(2)):
        ref = [mixed[i] for i in idx]
        np.testing.assert_array_equal(images.numpy(), np.stack([r[0] for r in ref]))
        np.testing.assert_array_equal(labels.numpy(), [r[1] for r in ref])
        np.testing.assert_array_equal(task_ids.numpy(), [r[3] for r in ref])
    ds = task_sets["person"]
    sample, batch_part = eval_parts(config)
    ev = ImageDataset([(ds.sources[0], ds.splits[0])], transform=sample, relabel=False)
    images = next(iter(build_eval_loader(ev, config, batch_part)))[0]
    ref = ImageDataset([(ds.sources[0], ds.splits[0])], transform=eval_transforms(config), relabel=False)
    np.testing.assert_array_equal(images.numpy(), np.stack([ref[i][0] for i in range(images.shape[0])]))


def test_shared_memory_only_where_dev_shm_holds_the_batches(monkeypatch):
    """Docker's 64 MB /dev/shm cannot hold the paper's batches in flight: workers use a pipe
    then (a SIGBUS in a worker otherwise). The log states the shared memory needed and found,
    once per loader and outcome, and on a pipe the docker flags that avoid it."""
    from ppufo.data import loader as L
    shm = {"free": 64 * 2 ** 20, "size": 64 * 2 ** 20}
    monkeypatch.setattr(L.os, "statvfs", lambda path: type("S", (), {"f_bavail": shm["free"], "f_blocks": shm["size"],
                                                                     "f_frsize": 1}))
    monkeypatch.setattr(L, "_said", set())
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    get_logger().addHandler(handler)
    try:
        assert L.shared_memory_fits(2 * 2 ** 20, 4, "DataLoader.Train") is True  # (2 * 4 + 2) x 2 MB x 2 = 40 MB
        assert L.shared_memory_fits(8 * 2 ** 20, 4, "DataLoader.Train") is False
        shm["free"] = 60 * 2 ** 20
        assert L.shared_memory_fits(8 * 2 ** 20, 4, "DataLoader.Train") is False  # said already
        assert L.shared_memory_fits(8 * 2 ** 20, 0, "DataLoader.Eval") is False  # no workers: nothing to say
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", "8")  # the paper: 8 ranks x 8 workers x 313 MiB = 44 GiB
        assert L.shared_memory_fits(313 * 2 ** 20, 8, "DataLoader.Eval") is False
    finally:
        get_logger().removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "DataLoader.Train: shared memory on: /dev/shm has 64 MB free (of 64 MB), the loaders of this machine may "
        "hold 40 MB (2 process(es) x 10 batches x 2.0 MB)",
        "DataLoader.Train: shared memory off: /dev/shm has 64 MB free (of 64 MB), the loaders of this machine may "
        "hold 160 MB (2 process(es) x 10 batches x 8.0 MB); workers send batches through a pipe (slower). In a "
        "container give it more: docker run --shm-size=1g, or --ipc=host (the host's /dev/shm)",
        "DataLoader.Eval: shared memory off: /dev/shm has 60 MB free (of 64 MB), the loaders of this machine may "
        "hold 45072 MB (8 process(es) x 18 batches x 313.0 MB); workers send batches through a pipe (slower). In a "
        "container give it more: docker run --shm-size=45g, or --ipc=host (the host's /dev/shm)"]


def test_a_batch_transform_needs_image_tuples():
    """The batch part runs on a batch's first field; a dataset of bare images is refused by name
    (the iterator does not guess where the images are)."""
    ds = dataset(QUICKSTART)
    samples, batch_part = split(ds)

    class Images(paddle.io.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, index):
            return samples[index][0]

    with pytest.raises(TypeError, match=r"items must be \(image, ...\) tuples, got batches of dict"):
        next(iter(DataLoader(Images(), batch_sampler=batches(1), batch_transform=batch_part)))
