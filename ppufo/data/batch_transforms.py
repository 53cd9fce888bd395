"""A Compose split in two (Compose.split): Normalize and RandomErasing run on a whole batch after
the copy, not per sample in a worker.

The sample part (the dataset's transform) runs the ops before Normalize and returns a LeanImage:
the uint8 HWC image and the draws of the RandomErasing ops after Normalize, made from the sample's
rng exactly as the float path makes them. ``collate`` stacks those into uint8 images plus small
arrays (a quarter of the float32 bytes, plus the erasing noise). The batch part (the loader's
batch transform) turns that batch, once it is a tensor where the loader put it, into the float32
NCHW batch of the per-sample path: the same float32 multiply and add, the noise copied, so equal
bit for bit. Where it runs follows the batch's place: in host memory with numpy; on a device (a
GPU: the loader moves the uint8 batch there from pinned memory, to_device.py) with Paddle ops.
"""
import numbers
import random

import numpy as np
import paddle

from .to_device import on_host

KEY = "lean_uint8"  # marks a lean batch (a dict) in a collated batch


class LeanImage:
    """A sample stopped before Normalize: ``image`` HWC, ``norm`` the Normalize op, ``erase``
    [(RandomErasing op, its draw or None)]."""
    __slots__ = ("image", "norm", "erase")

    def __init__(self, image, norm, erase):
        self.image, self.norm, self.erase = image, norm, erase

    @property
    def shape(self):
        """The shape of the float32 CHW image it stands for."""
        h, w, c = self.image.shape
        return c, h, w

    def to_float(self):
        """The float32 CHW array the per-sample path gives."""
        x = self.norm(self.image)
        for op, drawn in self.erase:
            x = x if drawn is None else op.paste(x, drawn)
        return x


class SamplePart:
    """The per-sample part of a Compose: its ops before Normalize, then the uint8 image and the
    draws of the RandomErasings after Normalize (a LeanImage)."""

    def __init__(self, head, norm, erasers):
        self.head, self.norm, self.erasers = list(head), norm, list(erasers)

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        for op in self.head:
            img = op(img, rng)
        arr = self.norm.hwc(img)
        shape = (arr.shape[2],) + arr.shape[:2]
        # the same draws, in the same order, as Normalize + RandomErasing make on the float array
        return LeanImage(arr, self.norm, [(e, e.draw(shape, rng)) for e in self.erasers])

    def __repr__(self):
        return f"SamplePart({', '.join(repr(op) for op in self.head)}, uint8 until {self.norm!r})"


class BatchPart:
    """The per-batch part of a Compose: its Normalize and RandomErasings on the images of a batch
    of SamplePart samples, as collate and the loader give them."""

    def __init__(self, norm, erasers):
        self.norm, self.erasers = norm, list(erasers)
        self.scale = [float(v) for v in norm._a]  # Normalize is x * scale + shift per channel
        self.shift = [float(v) for v in norm._b]
        self.affine = {}  # str(place) -> (scale, shift) as [1, C, 1, 1] float32 tensors there

    def __call__(self, images):
        """A lean batch (paddle tensors) -> float32 [B, C, H, W] where it is: with numpy in host
        memory (Paddle's broadcasting CPU kernels are ~4x slower), with Paddle ops on a device.
        A batch that collate stacked as float arrays already (see stack) is returned as it is."""
        if isinstance(images, paddle.Tensor):
            return images
        if not is_lean(images):
            raise TypeError(f"BatchPart: expected the images of a batch of SamplePart samples, got "
                            f"{type(images).__name__}; the dataset's items must be (image, ...) tuples")
        x = images[KEY]
        if on_host(x):  # pinned too when no device was given to move it to (loader.DataLoader)
            erase = [{k: v.numpy() if k != "any" else v for k, v in e.items()} for e in images["erase"]]
            return paddle.to_tensor(finish_numpy(x.numpy(), self.scale, self.shift, erase), place=x.place)
        return self.on_device(images)

    def on_device(self, images):
        """finish_device on a lean batch whose tensors are all on one device (on the CPU in tests),
        with scale and shift made there once: per step they would be two more host-to-device copies."""
        x = images[KEY]
        key = str(x.place)
        if key not in self.affine:
            c = len(self.scale)
            self.affine[key] = tuple(paddle.to_tensor(v, "float32", place=x.place).reshape([1, c, 1, 1])
                                     for v in (self.scale, self.shift))
        return finish_device(x, *self.affine[key], images["erase"])

    def __repr__(self):
        return f"BatchPart({', '.join(repr(op) for op in [self.norm, *self.erasers])})"


def collate(samples):
    """Paddle's default_collate_fn for what ppufo's datasets give (arrays, numbers, tuples of
    them), except that LeanImages become one lean batch (a dict, see stack)."""
    first = samples[0]
    if isinstance(first, LeanImage):
        return stack(samples)
    if isinstance(first, np.ndarray):
        return np.stack(samples)
    if isinstance(first, numbers.Number):
        return np.array(samples)
    if isinstance(first, (list, tuple)):
        if any(len(s) != len(first) for s in samples):
            raise ValueError(f"collate: samples of {sorted({len(s) for s in samples})} fields in one batch")
        return [collate(list(field)) for field in zip(*samples)]
    raise TypeError(f"collate: a sample field is a {type(first).__name__}; expected an array, a number, "
                    f"a LeanImage or a tuple of them")


def stack(images):
    """{KEY: uint8 [B, H, W, C], erase: per RandomErasing op {params: int32 [B, 8], values: float32
    [N + 1], any: bool}}. Sample b's box is rows top..top+h, columns left..left+w; inside it pixel
    (c, y, x) takes values[off + c*sc + (y-top)*sy + (x-left)*sx] (strides 0 where the fill
    broadcasts). Images that are not uint8, or too many pixels for int32 offsets, are stacked as the
    float arrays."""
    h, w, c = images[0].image.shape
    if any(im.image.dtype != np.uint8 for im in images) or len(images) * c * h * w >= 2 ** 31:
        return np.stack([im.to_float() for im in images])
    out = {KEY: np.stack([im.image for im in images]), "erase": []}
    for j in range(len(images[0].erase)):
        params, values, off = np.zeros((len(images), 8), np.int32), [], 0
        for b, im in enumerate(images):
            drawn = im.erase[j][1]
            if drawn is None:
                continue
            top, left, bh, bw, fill = drawn
            fill = np.ascontiguousarray(fill, np.float32)
            strides = [s // 4 for s in np.broadcast_to(fill, (c, bh, bw)).strides]
            params[b] = (top, left, bh, bw, off, *strides)
            values.append(fill.ravel())
            off += fill.size
        out["erase"].append({"params": params, "values": np.concatenate(values + [np.zeros(1, np.float32)]),
                             "any": off > 0})
    return out


def is_lean(field):
    return isinstance(field, dict) and KEY in field


def finish_numpy(images, scale, shift, erase):
    """Normalize's numpy ops on the whole batch, then each box pasted from its values."""
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32)
    c = x.shape[1]
    for k in range(c):
        x[:, k] *= np.float32(scale[k])
        x[:, k] += np.float32(shift[k])
    for e in erase:
        values = e["values"]
        for b in np.flatnonzero(e["params"][:, 2]) if e["any"] else ():
            top, left, h, w, off, sc, sy, sx = (int(v) for v in e["params"][b])
            x[b, :, top:top + h, left:left + w] = np.lib.stride_tricks.as_strided(
                values[off:], (c, h, w), (4 * sc, 4 * sy, 4 * sx), writeable=False)
    return x


def finish_device(x, scale, shift, erase):
    """The same with Paddle ops where ``x`` is (on a GPU: the batch never returns to the host);
    ``scale`` and ``shift`` are [1, C, 1, 1] float32 tensors there."""
    x = x.transpose([0, 3, 1, 2]).astype("float32") * scale + shift  # two roundings, as numpy's
    for e in erase:
        if e["any"]:
            x = erase_device(x, e["params"], e["values"])
    return x


def erase_device(x, params, values):
    """x with each sample's box filled from ``values`` (see stack), in one pass over the batch."""
    b, c, h, w = x.shape
    top, left, bh, bw, off, sc, sy, sx = (params[:, i].reshape([b, 1, 1, 1]) for i in range(8))
    ys = paddle.arange(h, dtype="int32").reshape([1, 1, h, 1]) - top
    xs = paddle.arange(w, dtype="int32").reshape([1, 1, 1, w]) - left
    inside = (ys >= 0) & (ys < bh) & (xs >= 0) & (xs < bw)  # [B, 1, H, W]
    idx = off + paddle.arange(c, dtype="int32").reshape([1, c, 1, 1]) * sc + ys * sy + xs * sx
    idx = paddle.where(inside, idx, paddle.zeros([1], "int32"))  # outside a box: any valid index
    return paddle.where(inside, paddle.gather(values, idx.flatten()).reshape([b, c, h, w]), x)
