"""The GPU input path on a CPU-only Paddle: batches in pinned memory move to Global.device's place
without blocking (images as uint8, the erasing draws, the labels) and are finished there with
Paddle ops; batches in CPU memory keep the numpy path. The CPU wheel has no pinned or GPU place
(it refuses to make a CUDAPinnedPlace), so tensors and places stand in for them: real CPU tensors
and CPUPlaces that say they are pinned or on a device."""
import collections

import numpy as np
import paddle
import pytest

from ppufo.data import batch_transforms as BT
from ppufo.data import loader as L
from ppufo.data import to_device as TD
from test_batch_transforms import ERASERS, PAPER, QUICKSTART, as_tensors, batches, dataset, lean, reference, split


class PinnedPlace(paddle.CPUPlace):
    def is_cpu_place(self):
        return False

    def is_cuda_pinned_place(self):
        return True


class GpuPlace(paddle.CPUPlace):
    def is_cpu_place(self):
        return False

    def is_cuda_pinned_place(self):
        return False

    def __str__(self):
        return "Place(gpu:0)"


GPU = GpuPlace()


class OnGpu(paddle.Tensor):
    """A tensor on GPU (its data in CPU memory, so Paddle's CPU kernels run on it)."""

    @property
    def place(self):
        return GPU


class Pinned(paddle.Tensor):
    """A tensor in pinned memory; its copies are logged in ``copies`` as (name, place, blocking)."""
    copies = []

    @property
    def place(self):
        return PinnedPlace()

    def _copy_to(self, place, blocking):
        Pinned.copies.append((self.name, place, blocking))
        return OnGpu(self.numpy()) if place is GPU else paddle.Tensor._copy_to(self, place, blocking)


def pinned(field, name="x"):
    """``field`` (a collated batch field: arrays, tensors, dicts, lists) as Pinned tensors, each
    named by its path."""
    if isinstance(field, dict):
        return {k: pinned(v, f"{name}.{k}") for k, v in field.items()}
    if isinstance(field, list):
        return [pinned(v, f"{name}.{i}") for i, v in enumerate(field)]
    if isinstance(field, (np.ndarray, paddle.Tensor)):
        t = Pinned(np.asarray(field))
        t.name = name
        return t
    return field


class Event:
    """paddle.device.Event's stand-in: done when the test says so."""
    made = []

    def __init__(self):
        self.recorded = self.waited = self.done = False
        Event.made.append(self)

    def record(self):
        self.recorded = True

    def query(self):
        return self.done

    def synchronize(self):
        self.waited = True


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    Pinned.copies, Event.made = [], []
    monkeypatch.setattr(TD, "_in_flight", collections.deque())


def lean_batch(items, seed=0):
    """(a worker's batch on the uint8 path, [lean images, labels, camids, task_ids]; the float
    path's images; the batch part)."""
    ds = dataset(items)
    b = batches(1, seed=seed)[0]
    labels = np.array([ds[i][1] for i in b], np.int64)
    return [lean(ds, b)[0], labels, labels * 0 + 1, labels * 0 + 2], reference(ds, b), split(ds)[1]


def test_device_place_comes_from_global_device():
    """Global.device=cpu: batches stay in host memory (no move); anything else is a place."""
    assert TD.device_place("cpu") is None
    with pytest.raises(ValueError, match="not compiled with CUDA"):  # this wheel; setup_device names it first
        TD.device_place("gpu")


@pytest.mark.parametrize("items", [QUICKSTART, ERASERS], ids=["without_erasing", "erasing_modes"])
def test_batch_part_path_follows_the_place(items, monkeypatch):
    """CPU memory -> numpy; pinned memory with nowhere to move it -> numpy (host memory as well);
    on a device -> Paddle ops there, scale and shift made there once. All bit-equal to the float path."""
    batch, ref, part = lean_batch(items)
    calls = []
    for name in ("finish_numpy", "finish_device"):
        monkeypatch.setattr(BT, name, lambda *a, _f=getattr(BT, name), _n=name: calls.append(_n) or _f(*a))
    cpu = as_tensors(batch[0])
    np.testing.assert_array_equal(part(cpu).numpy(), ref)
    np.testing.assert_array_equal(part(pinned(batch[0])).numpy(), ref)
    assert calls == ["finish_numpy", "finish_numpy"] and part.affine == {}
    on_gpu = TD.ToDevice(GPU, Event)(pinned(batch[0]))
    assert isinstance(on_gpu["lean_uint8"], OnGpu) and on_gpu["lean_uint8"].dtype == paddle.uint8
    np.testing.assert_array_equal(part(on_gpu).numpy(), ref)
    scale, shift = part.affine["Place(gpu:0)"]
    np.testing.assert_array_equal(part(on_gpu).numpy(), ref)
    assert calls[2:] == ["finish_device", "finish_device"]
    assert list(part.affine) == ["Place(gpu:0)"] and part.affine["Place(gpu:0)"][0] is scale  # made once
    assert scale.shape == [1, 3, 1, 1]
    np.testing.assert_array_equal(scale.numpy().ravel(), np.float32(part.scale))
    np.testing.assert_array_equal(shift.numpy().ravel(), np.float32(part.shift))


def test_loader_moves_images_draws_and_labels_without_blocking(monkeypatch):
    """finish_batch with a device: the uint8 images, each RandomErasing's params and values and the
    labels are copied to the configured place, each once, non-blocking; camids and task ids stay;
    the images are then finished on the device (numpy never runs), equal to the float path."""
    monkeypatch.setattr(BT, "finish_numpy", lambda *a: pytest.fail("numpy ran on a batch on the device"))
    batch, ref, part = lean_batch(PAPER + ERASERS[-3:], seed=1)
    out = L.finish_batch(pinned(batch), TD.ToDevice(GPU, Event), 2, part)
    moved = ["x.0.lean_uint8"] + [f"x.0.erase.{j}.{k}" for j in range(4) for k in ("params", "values")] + ["x.1"]
    assert sorted(Pinned.copies, key=str) == sorted([(name, GPU, False) for name in moved], key=str)
    np.testing.assert_array_equal(out[0].numpy(), ref)
    assert isinstance(out[1], OnGpu) and out[1].dtype == paddle.int64
    np.testing.assert_array_equal(out[1].numpy(), batch[1])
    assert isinstance(out[2], Pinned) and isinstance(out[3], Pinned)  # not used on the device: not moved


def held():
    """The names of the host tensors held for copies in flight, oldest first."""
    return [t.name for _, sources in TD._in_flight for t in sources]


def test_host_sources_live_until_the_device_has_read_them():
    """A non-blocking copy does not hold its source: each call's pinned tensors are kept until an
    event recorded after its copies has passed; past KEEP calls in flight the oldest is waited for."""
    move = TD.ToDevice(GPU, Event)
    sources = [pinned(np.arange(4, dtype=np.int64), f"b{i}") for i in range(TD.KEEP + 1)]
    for s in sources[:TD.KEEP]:
        move([s])
    assert [e.recorded for e in Event.made] == [True] * TD.KEEP
    assert held() == [f"b{i}" for i in range(TD.KEEP)]
    move([sources[TD.KEEP]])  # one past KEEP: the oldest is waited for, then let go
    assert [e.waited for e in Event.made] == [True] + [False] * TD.KEEP
    assert held() == [f"b{i}" for i in range(1, TD.KEEP + 1)]
    Event.made[1].done = True
    move([OnGpu(np.zeros(1))])  # nothing to copy: no event, but what the device has read is let go
    assert len(Event.made) == TD.KEEP + 1 and held() == [f"b{i}" for i in range(2, TD.KEEP + 1)]
    assert Pinned.copies == [(f"b{i}", GPU, False) for i in range(TD.KEEP + 1)]


def test_loaders_move_to_global_device(make_config, monkeypatch):
    """build_train_loader moves images and labels, build_eval_loader images, to Global.device's
    place; on the CPU they stay, and the batches are those of a loader without a device."""
    config = make_config()
    assert L.build_train_loader(config)[0].device is None
    monkeypatch.setattr(L, "device_place", lambda name: ("place of", name))
    config["Global"]["device"] = "gpu:3"
    train, task_sets = L.build_train_loader(config)
    assert (train.device, train.device_fields) == (("place of", "gpu:3"), 2)
    sample, part = L.eval_parts(config)
    ev = L.build_eval_loader(task_sets["person"], config, part)
    assert (ev.device, ev.device_fields) == (("place of", "gpu:3"), 1)


def test_a_loader_with_a_device_gives_the_same_batches(monkeypatch):
    """Through paddle.io.DataLoader on this CPU (its batches in CPU memory, each copied by
    Tensor._copy_to to a CPUPlace that stands for the device): the same images and labels."""
    monkeypatch.setattr(paddle.device, "Event", Event)
    ds = dataset(PAPER, n=24)
    bs = batches(2, size=12, seed=4)
    samples, part = split(ds)
    plain = list(L.DataLoader(samples, batch_sampler=bs, batch_transform=part))
    moved = list(L.DataLoader(samples, batch_sampler=bs, batch_transform=part, device=paddle.CPUPlace(),
                              device_fields=2))
    assert len(moved) == 2 and len(Event.made) == 2 and all(e.recorded for e in Event.made)
    for a, b in zip(plain, moved):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.numpy(), y.numpy())
