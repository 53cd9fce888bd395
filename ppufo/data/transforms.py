"""Image transforms: PaddleClas-style op lists, every random draw from the per-sample rng.

An op is a callable ``op(img, rng)``: ``img`` is a PIL image before ``Normalize`` and a
float32 CHW numpy array after it; ``rng`` is the ``random.Random`` that ImageDataset seeds
per sample, so augmentation is reproducible and independent of the number of workers.
``Compose.split()`` cuts a list at its Normalize for the loader: uint8 samples, normalised and
erased per batch (batch_transforms).

    build_transforms([{"Resize": {"size": [384, 384]}}, {"Normalize": None}], where=...)
"""
import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..utils.config import Field, check_args
from ..utils.errors import ConfigError
from ..utils.registry import Registry, check_kwargs
from .batch_transforms import BatchPart, SamplePart

TRANSFORMS = Registry("transform")

PIL, CHW, ANY = "PIL image", "CHW array", "any"
INTERPOLATION = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


# ----------------------------------------------------------------------------- helpers
def _hw(value, key):
    """[h, w] (or a single int for a square) -> (h, w) of positive ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError(f"{key}: expected [height, width] of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


PROB, NONNEG, NUMBER = Field(float, min=0, max=1), Field(float, min=0), Field(float)


def _to_pil(img):
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3):
        return Image.fromarray(img)
    raise TypeError(f"expected a PIL image (or HWC uint8 array), got {type(img).__name__}"
                    f"{getattr(img, 'shape', '')}; put this op before Normalize")


def _fill_for(img, fill):
    """A fill colour matching the image mode (RGB tuple, or one value for L)."""
    if isinstance(fill, (int, float)):
        fill = (int(fill),) * 3
    return tuple(fill) if img.mode == "RGB" else int(fill[0])


def flip_chw(x):
    """Mirror images left-right along the last axis (CHW or NCHW; numpy or paddle)."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x[..., ::-1])
    import paddle
    return paddle.flip(x, axis=[x.ndim - 1])


class Compose:
    """Apply ops in order with one shared rng."""

    def __init__(self, ops):
        self.ops = list(ops)

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        for op in self.ops:
            img = op(img, rng)
        return img

    def split(self):
        """(sample part, batch part) when everything from Normalize on can run on whole batches:
        the sample part gives each sample's uint8 image and random draws, the batch part makes
        of their collated batch the float32 batch this Compose gives per sample, bit for bit
        (batch_transforms). Else why not (a string): then the loader runs this Compose per sample."""
        kinds = [type(op) for op in self.ops]
        if Normalize not in kinds:
            return "no Normalize (ppufo's own) in the list"
        i = kinds.index(Normalize)
        if any(getattr(op, "gives", PIL) == CHW for op in self.ops[:i]):
            return "an op before Normalize already gives an array"
        other = [type(op).__name__ for op in self.ops[i + 1:] if type(op) is not RandomErasing]
        if other:
            return f"{other[0]} after Normalize works on float arrays"
        return SamplePart(self.ops[:i], self.ops[i], self.ops[i + 1:]), BatchPart(self.ops[i], self.ops[i + 1:])

    def to_config(self, where="transforms"):
        """The ``[{OpName: {kwargs}}]`` list that build_transforms rebuilds this pipeline from;
        ConfigError at ``where``.<i>.<op> for an op that cannot be written down."""
        items = []
        for i, op in enumerate(self.ops):
            try:
                items.append(op.to_config())
            except ConfigError as e:
                raise ConfigError(f"{where}.{i}.{type(op).__name__}: {e}") from None
        return items

    def __len__(self):
        return len(self.ops)

    def __repr__(self):
        return "Compose(" + ", ".join(repr(op) for op in self.ops) + ")"


class Op:
    """Base: ``takes``/``gives`` say which stage (PIL image / CHW array) the op works on."""
    takes, gives = PIL, PIL

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    def to_config(self):
        """``{OpName: {kwargs}}`` for build_transforms. Only deterministic ops have one: a random
        op's output hangs on the rng, which a deployed model does not share with evaluation."""
        raise ConfigError("draws from the per-sample rng, so it has no fixed output to export; "
                          "keep random (train-only) ops out of the eval pipeline")


# ----------------------------------------------------------------------------- PIL ops
@TRANSFORMS.register
class Resize(Op):
    """Resize to exactly [h, w] (aspect not kept, as the reference)."""

    def __init__(self, size, interpolation="bicubic"):
        self.size = _hw(size, "size")
        if interpolation not in INTERPOLATION:
            raise ConfigError(f"interpolation: expected one of {sorted(INTERPOLATION)}, got {interpolation!r}")
        self.interpolation = interpolation
        self._resample = INTERPOLATION[interpolation]

    def __call__(self, img, rng=None):
        img = _to_pil(img)
        h, w = self.size
        if img.size == (w, h):
            return img
        return img.resize((w, h), self._resample)

    def to_config(self):
        return {"Resize": {"size": list(self.size), "interpolation": self.interpolation}}


@TRANSFORMS.register
class Pad(Op):
    """Constant padding: an int (all sides), [x, y] or [left, top, right, bottom]."""

    def __init__(self, padding=10, fill=0):
        p = [padding] if isinstance(padding, int) else padding
        if (not isinstance(p, (list, tuple)) or len(p) not in (1, 2, 4)
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)):
            raise ConfigError(f"padding: expected an int >= 0, [x, y] or [left, top, right, bottom], got {padding!r}")
        p = list(p) * 4 if len(p) == 1 else (list(p) * 2 if len(p) == 2 else list(p))
        self.padding = tuple(p[:4])
        if isinstance(fill, (list, tuple)):
            if len(fill) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill):
                raise ConfigError(f"fill: expected an int or [r, g, b] in 0..255, got {fill!r}")
        elif not isinstance(fill, int) or isinstance(fill, bool) or not 0 <= fill <= 255:
            raise ConfigError(f"fill: expected an int or [r, g, b] in 0..255, got {fill!r}")
        self.fill = fill

    def __call__(self, img, rng=None):
        img = _to_pil(img)
        left, top, right, bottom = self.padding
        if not any(self.padding):
            return img
        w, h = img.size
        out = Image.new(img.mode, (w + left + right, h + top + bottom), _fill_for(img, self.fill))
        out.paste(img, (left, top))
        return out

    def to_config(self):
        fill = list(self.fill) if isinstance(self.fill, (list, tuple)) else self.fill
        return {"Pad": {"padding": list(self.padding), "fill": fill}}


@TRANSFORMS.register
class RandomCrop(Op):
    """Crop [h, w] at a random position; an image smaller than that is zero-padded first."""

    def __init__(self, size):
        self.size = _hw(size, "size")

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        img = _to_pil(img)
        th, tw = self.size
        w, h = img.size
        if w < tw or h < th:
            px, py = max(tw - w, 0), max(th - h, 0)
            img = Pad([px // 2, py // 2, px - px // 2, py - py // 2])(img)
            w, h = img.size
        top = rng.randint(0, h - th)
        left = rng.randint(0, w - tw)
        if (w, h) == (tw, th):
            return img
        return img.crop((left, top, left + tw, top + th))


@TRANSFORMS.register
@check_args(prob=PROB)
class RandomHorizontalFlip(Op):
    """Mirror with probability ``prob``; works on PIL images and CHW arrays."""
    takes = gives = ANY

    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        if rng.random() >= self.prob:
            return img
        if isinstance(img, np.ndarray) and img.dtype != np.uint8:
            return flip_chw(img)
        return _to_pil(img).transpose(Image.FLIP_LEFT_RIGHT)


@TRANSFORMS.register
@check_args(brightness=NONNEG, contrast=NONNEG, saturation=NONNEG, prob=PROB)
class ColorJitter(Op):
    """Brightness, contrast and saturation factors drawn from [1-x, 1+x], applied in random order."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, prob=1.0):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.prob = prob

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        img = _to_pil(img)
        if rng.random() >= self.prob:
            return img
        parts = [(ImageEnhance.Brightness, self.brightness), (ImageEnhance.Contrast, self.contrast),
                 (ImageEnhance.Color, self.saturation)]
        rng.shuffle(parts)
        for enhancer, amount in parts:
            if amount > 0:
                img = enhancer(img).enhance(rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount))
        return img


# ----------------------------------------------------------------------------- AutoAugment
# Ops of the original ImageNet policy (Cubuk et al. 2018) with timm's magnitude scaling:
# each takes (img, magnitude 0..10, rng, fill).
MAX_LEVEL = 10.0


def _signed(v, rng):
    return -v if rng.random() < 0.5 else v


def _resample(rng):
    return rng.choice((Image.BILINEAR, Image.BICUBIC))  # as timm: random per op


def _aa_rotate(img, m, rng, fill):
    return img.rotate(_signed(m / MAX_LEVEL * 30.0, rng), resample=_resample(rng), fillcolor=fill)


def _aa_shear_x(img, m, rng, fill):
    f = _signed(m / MAX_LEVEL * 0.3, rng)
    return img.transform(img.size, Image.AFFINE, (1, f, 0, 0, 1, 0), resample=_resample(rng), fillcolor=fill)


def _aa_posterize(img, m, rng, fill):
    bits = int(m / MAX_LEVEL * 4) + 4  # "PosterizeOriginal": keep 4..8 bits
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _aa_solarize(img, m, rng, fill):
    return ImageOps.solarize(img, int(m / MAX_LEVEL * 256))


def _enhance(cls):
    def op(img, m, rng, fill):
        return cls(img).enhance(m / MAX_LEVEL * 1.8 + 0.1)  # factor in [0.1, 1.9]
    return op


AA_OPS = {
    "AutoContrast": lambda img, m, rng, fill: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng, fill: ImageOps.equalize(img),
    "Invert": lambda img, m, rng, fill: ImageOps.invert(img),
    "Rotate": _aa_rotate,
    "ShearX": _aa_shear_x,
    "Posterize": _aa_posterize,
    "Solarize": _aa_solarize,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
}

# (op, probability, magnitude) pairs; 25 sub-policies.
IMAGENET_POLICY = [
    [("Posterize", 0.4, 8), ("Rotate", 0.6, 9)],
    [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
    [("Posterize", 0.6, 7), ("Posterize", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
    [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
    [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)],
    [("Posterize", 0.8, 5), ("Equalize", 1.0, 2)],
    [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)],
    [("Equalize", 0.6, 8), ("Posterize", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)],
    [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
    [("Color", 0.8, 8), ("Solarize", 0.8, 7)],
    [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
    [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)],
    [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
    [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]
POLICIES = {"imagenet": IMAGENET_POLICY, "original": IMAGENET_POLICY}


@TRANSFORMS.register
@check_args(prob=PROB, magnitude_std=NONNEG)
class AutoAugment(Op):
    """With probability ``prob`` pick one sub-policy and apply its two ops, each with its own
    probability. ``magnitude_std`` > 0 adds Gaussian noise to magnitudes (timm "mstd")."""

    def __init__(self, prob=0.5, policy="imagenet", fill=(128, 128, 128), magnitude_std=0.0):
        self.prob = prob
        if policy not in POLICIES:
            raise ConfigError(f"policy: expected one of {sorted(POLICIES)}, got {policy!r}")
        self.policy = policy
        ok = isinstance(fill, int) or (isinstance(fill, (list, tuple)) and len(fill) == 3
                                       and all(isinstance(v, int) for v in fill))
        if not ok:
            raise ConfigError(f"fill: expected an int or [r, g, b], got {fill!r}")
        self.fill = tuple(fill) if isinstance(fill, (list, tuple)) else fill
        self.magnitude_std = magnitude_std
        self._subs = POLICIES[policy]

    def __call__(self, img, rng=None):
        rng = rng if rng is not None else random.Random()
        img = _to_pil(img)
        if rng.random() >= self.prob:
            return img
        fill = _fill_for(img, self.fill)
        for name, p, m in self._subs[rng.randrange(len(self._subs))]:
            if rng.random() >= p:
                continue
            if self.magnitude_std > 0:
                m = min(MAX_LEVEL, max(0.0, rng.gauss(m, self.magnitude_std)))
            img = AA_OPS[name](img, m, rng, fill)
        return img


# ----------------------------------------------------------------------------- to array
@TRANSFORMS.register
@check_args(scale=NUMBER)
class Normalize(Op):
    """PIL/HWC uint8 -> float32 CHW: (x * scale - mean) / std. Ends the PIL part."""
    takes, gives = PIL, CHW

    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), scale=1.0 / 255.0):
        if not isinstance(mean, (list, tuple)) or not isinstance(std, (list, tuple)) or len(mean) != len(std) \
                or not mean or not all(isinstance(v, (int, float)) for v in list(mean) + list(std)):
            raise ConfigError(f"mean/std: expected two lists of numbers of equal length, got {mean!r} / {std!r}")
        if any(s == 0 for s in std):
            raise ConfigError(f"std: must not contain 0, got {std!r}")
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        self.scale = scale
        m, s = np.asarray(self.mean), np.asarray(self.std)
        self._a = (self.scale / s).astype(np.float32)  # x * a + b == (x * scale - mean) / std
        self._b = (-m / s).astype(np.float32)

    def hwc(self, img):
        """The image as an HWC array with this op's number of channels."""
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] != len(self.mean):
            raise ValueError(f"Normalize: expected an HWC image with {len(self.mean)} channels, got shape {arr.shape}")
        return arr

    def __call__(self, img, rng=None):
        arr = self.hwc(img)
        # CHW first, then per-channel scalar ops (broadcasting over a length-3 axis is ~10x slower)
        out = np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32)
        for k in range(out.shape[0]):
            out[k] *= self._a[k]
            out[k] += self._b[k]
        return out

    def to_config(self):
        return {"Normalize": {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}}


# ----------------------------------------------------------------------------- array ops
@TRANSFORMS.register
@check_args(prob=PROB, sl=NUMBER, sh=NUMBER, r1=Field(float, above=0, max=1),
            value=Field((float, list, tuple), items=NUMBER))
class RandomErasing(Op):
    """Random erasing (Zhong et al.; timm's variant) on a CHW float array.

    With probability ``prob`` one box of area in [sl, sh] of the image and aspect in
    [r1, 1/r1] is filled with per-pixel N(0, 1) noise ("pixel"), one N(0, 1) value per
    channel ("rand") or ``value`` ("const"). Returns a new array.
    """
    takes, gives = CHW, CHW
    MODES = ("pixel", "rand", "const")

    def __init__(self, prob=0.5, sl=0.02, sh=0.33, r1=0.3, mode="pixel", value=0.0, attempts=10):
        self.prob = prob
        self.sl, self.sh = sl, sh
        if not 0.0 < self.sl <= self.sh < 1.0:
            raise ConfigError(f"sl/sh: expected 0 < sl <= sh < 1, got sl={sl!r} sh={sh!r}")
        self.r1 = r1
        if mode not in self.MODES:
            raise ConfigError(f"mode: expected one of {list(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.value = value
        if not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"attempts: expected an int >= 1, got {attempts!r}")
        self.attempts = attempts

    def box(self, shape, rng):
        """(top, left, h, w) of a box, or None when no attempt fits."""
        H, W = shape[-2], shape[-1]
        area = H * W
        lo, hi = math.log(self.r1), math.log(1.0 / self.r1)
        for _ in range(self.attempts):
            target = rng.uniform(self.sl, self.sh) * area
            aspect = math.exp(rng.uniform(lo, hi))
            h = int(round(math.sqrt(target * aspect)))
            if not 0 < h < H:
                continue
            # w from the target area, kept so that h * w stays within [sl, sh] after rounding
            w = min(max(int(round(target / h)), math.ceil(self.sl * area / h)), math.floor(self.sh * area / h))
            if not 0 < w < W or not self.sl * area <= h * w <= self.sh * area:
                continue
            return rng.randint(0, H - h), rng.randint(0, W - w), h, w
        return None

    def draw(self, shape, rng):
        """This sample's random draws for a CHW ``shape``: None (not erased) or
        (top, left, h, w, fill) with fill broadcastable to (C, h, w)."""
        if rng.random() >= self.prob:
            return None
        b = self.box(shape, rng)
        if b is None:
            return None
        top, left, h, w = b
        if self.mode == "const":
            fill = np.asarray(self.value, np.float32).reshape(-1, 1, 1)
        else:
            gen = np.random.default_rng(rng.getrandbits(64))
            fill = gen.standard_normal((shape[0], h, w) if self.mode == "pixel" else (shape[0], 1, 1),
                                       dtype=np.float32)
        return top, left, h, w, fill

    @staticmethod
    def paste(x, drawn):
        """``x`` with the box of ``drawn`` (from draw) filled: a new array."""
        top, left, h, w, fill = drawn
        x = x.copy()
        x[:, top:top + h, left:left + w] = fill
        return x

    def __call__(self, x, rng=None):
        rng = rng if rng is not None else random.Random()
        if not isinstance(x, np.ndarray) or x.ndim != 3:
            raise TypeError(f"RandomErasing: expected a CHW array (put it after Normalize), got "
                            f"{type(x).__name__}{getattr(x, 'shape', '')}")
        drawn = self.draw(x.shape, rng)
        return x if drawn is None else self.paste(x, drawn)


# ----------------------------------------------------------------------------- builders
def build_transforms(items, where="transforms", to_array=True):
    """Build a Compose from ``[{OpName: {kwargs} | None}, ...]``. Checks that each op gets the
    stage it works on (PIL ops before Normalize, array ops after) and, with ``to_array``,
    that the pipeline ends with a CHW array."""
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of {{OpName: {{...}}}}, got {items!r}")
    ops, stage = [], PIL
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{where}.{i}: expected a single-key mapping such as "
                              f"{{Resize: {{size: [384, 384]}}}}, got {item!r}")
        (name, kwargs), = item.items()
        at = f"{where}.{i}.{name}"
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{at}: expected a mapping of arguments or null, got {kwargs!r}")
        try:
            cls = TRANSFORMS.get(name)
        except ConfigError as e:
            raise ConfigError(f"{where}.{i}: {e}") from None
        check_kwargs(cls, kwargs, at)
        try:
            op = cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{at}.{e}") from None
        if op.takes != ANY and op.takes != stage:
            hint = "before Normalize" if op.takes == PIL else "after Normalize"
            raise ConfigError(f"{at}: works on a {op.takes} but gets a {stage}; put it {hint}")
        stage = stage if op.gives == ANY else op.gives
        ops.append(op)
    if to_array and stage != CHW:
        raise ConfigError(f"{where}: must end with a CHW array (add a Normalize step)")
    return Compose(ops)


def default_train_transforms(image_hw):
    """The paper's order: AutoAugment p0.5, bicubic resize, pad 10 + random crop, flip,
    normalise to [-1, 1], random erasing p0.5 (pixel mode)."""
    hw = list(_hw(list(image_hw) if isinstance(image_hw, tuple) else image_hw, "image_hw"))
    return Compose([
        AutoAugment(prob=0.5),
        Resize(hw, "bicubic"),
        Pad(10),
        RandomCrop(hw),
        RandomHorizontalFlip(0.5),
        Normalize(),
        RandomErasing(prob=0.5, mode="pixel"),
    ])


def default_eval_transforms(image_hw):
    hw = list(_hw(list(image_hw) if isinstance(image_hw, tuple) else image_hw, "image_hw"))
    return Compose([Resize(hw, "bicubic"), Normalize()])
