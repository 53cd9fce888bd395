"""Normalize and RandomErasing run on a whole batch after the copy, not per sample in a worker.

Loader workers (inside ``transforms.uint8_samples``) stop a Compose before its Normalize and
return a LeanImage: the uint8 HWC image and the draws of the RandomErasing ops after Normalize,
made from the sample's rng exactly as the float path makes them. ``collate`` stacks those into
uint8 images plus small arrays (a quarter of the float32 bytes, plus the erasing noise);
``finish`` turns that batch, once it is a tensor where the loader put it (on a GPU: copied by
Paddle's buffered reader through pinned memory), into the float32 NCHW batch of the per-sample
path: the same float32 multiply and add, the noise copied, so equal bit for bit.
"""
import numpy as np

KEY = "lean_uint8"  # marks a lean batch (a dict) in a collated batch


class LeanImage:
    """A sample stopped before Normalize: ``image`` HWC, ``norm`` the Normalize op, ``erase``
    [(RandomErasing op, its draw or None)]."""
    __slots__ = ("image", "norm", "erase")

    def __init__(self, image, norm, erase):
        self.image, self.norm, self.erase = image, norm, erase

    def to_float(self):
        """The float32 CHW array the per-sample path gives."""
        x = self.norm(self.image)
        for op, drawn in self.erase:
            x = x if drawn is None else op.paste(x, drawn)
        return x

    def key(self):
        """Samples with equal keys can share one lean batch."""
        return (self.image.shape, self.image.dtype.str, tuple(self.norm._a), tuple(self.norm._b), len(self.erase))


def collate(samples):
    """Paddle's default_collate_fn, except that LeanImages (a sample, or its first field)
    become one lean batch (a dict, see stack)."""
    from paddle.io.dataloader.collate import default_collate_fn
    first = samples[0]
    if isinstance(first, LeanImage):
        return stack(samples)
    if isinstance(first, (list, tuple)) and first and isinstance(first[0], LeanImage):
        return [stack([s[0] for s in samples])] + default_collate_fn([list(s[1:]) for s in samples])
    return default_collate_fn(samples)


def stack(images):
    """{KEY: uint8 [B, H, W, C], scale/shift: Normalize's per-channel x * scale + shift,
    erase: per RandomErasing op {params: int32 [B, 8], values: float32 [N + 1], any: bool}}.
    Sample b's box is rows top..top+h, columns left..left+w; inside it pixel (c, y, x) takes
    values[off + c*sc + (y-top)*sy + (x-left)*sx] (strides 0 where the fill broadcasts).
    Images of differing shape, type or transforms fall back to the stacked float arrays."""
    k = images[0].key()
    h, w, c = images[0].image.shape
    if k[1] != "|u1" or any(im.key() != k for im in images) or len(images) * c * h * w >= 2 ** 31:
        return np.stack([im.to_float() for im in images])
    norm = images[0].norm
    out = {KEY: np.stack([im.image for im in images]), "scale": [float(v) for v in norm._a],
           "shift": [float(v) for v in norm._b], "erase": []}
    for j in range(k[-1]):
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


def finish(batch):
    """A lean batch (paddle tensors) -> float32 [B, C, H, W] where it is: with numpy in host
    memory (Paddle's broadcasting CPU kernels are ~4x slower), with Paddle ops on a device."""
    import paddle
    x = batch[KEY]
    if x.place.is_cpu_place() or x.place.is_cuda_pinned_place():
        erase = [{k: v.numpy() if k != "any" else v for k, v in e.items()} for e in batch["erase"]]
        return paddle.to_tensor(finish_numpy(x.numpy(), batch["scale"], batch["shift"], erase), place=x.place)
    return finish_device(x, batch["scale"], batch["shift"], batch["erase"])


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
    """The same with Paddle ops (on a GPU: the batch never returns to the host)."""
    import paddle
    c = x.shape[3]
    scale = paddle.to_tensor(scale, "float32", place=x.place).reshape([1, c, 1, 1])
    shift = paddle.to_tensor(shift, "float32", place=x.place).reshape([1, c, 1, 1])
    x = x.transpose([0, 3, 1, 2]).astype("float32") * scale + shift  # two roundings, as numpy's
    for e in erase:
        if e["any"]:
            x = erase_device(x, e["params"], e["values"])
    return x


def erase_device(x, params, values):
    """x with each sample's box filled from ``values`` (see stack), in one pass over the batch."""
    import paddle
    b, c, h, w = x.shape
    top, left, bh, bw, off, sc, sy, sx = (params[:, i].reshape([b, 1, 1, 1]) for i in range(8))
    ys = paddle.arange(h, dtype="int32").reshape([1, 1, h, 1]) - top
    xs = paddle.arange(w, dtype="int32").reshape([1, 1, 1, w]) - left
    inside = (ys >= 0) & (ys < bh) & (xs >= 0) & (xs < bw)  # [B, 1, H, W]
    idx = off + paddle.arange(c, dtype="int32").reshape([1, c, 1, 1]) * sc + ys * sy + xs * sx
    idx = paddle.where(inside, idx, paddle.zeros([1], "int32"))  # outside a box: any valid index
    return paddle.where(inside, paddle.gather(values, idx.flatten()).reshape([b, c, h, w]), x)
