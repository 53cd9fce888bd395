import random
import time

import numpy as np
import pytest
from PIL import Image

from ppufo.data import transforms as T
from ppufo.utils.errors import ConfigError


def pil(arr):
    return Image.fromarray(np.asarray(arr, dtype=np.uint8))


@pytest.fixture(scope="module")
def photo():
    """A smooth low-contrast RGB image with noise (64 high, 48 wide)."""
    rs = np.random.RandomState(0)
    y, x = np.mgrid[0:64, 0:48]
    base = 60 + 120 * (0.6 * y / 63 + 0.4 * x / 47)
    arr = np.stack([base, base[::-1], base[:, ::-1]], -1) + rs.randint(0, 20, (64, 48, 3))
    return pil(np.clip(arr, 0, 255))


# ---------------------------------------------------------------- single ops
def test_resize_size_and_interpolation(photo):
    out = T.Resize([30, 70])(photo)
    assert out.size == (70, 30)  # PIL size is (w, h); config is [h, w]
    np.testing.assert_array_equal(np.array(out), np.array(photo.resize((70, 30), Image.BICUBIC)))
    # nearest 2x upscale of a 2x2 image repeats every pixel in a 2x2 block
    small = pil([[[0, 0, 0], [255, 255, 255]], [[10, 20, 30], [40, 50, 60]]])
    big = np.array(T.Resize(4, interpolation="nearest")(small))
    np.testing.assert_array_equal(big, np.array(small).repeat(2, 0).repeat(2, 1))
    assert T.Resize([64, 48])(photo) is photo  # already that size
    with pytest.raises(ConfigError, match="interpolation: expected one of"):
        T.Resize(8, interpolation="lanczos3")


def test_pad_adds_constant_border(photo):
    out = np.array(T.Pad(10)(photo))
    assert out.shape == (84, 68, 3)
    np.testing.assert_array_equal(out[10:74, 10:58], np.array(photo))
    border = out.copy()
    border[10:74, 10:58] = 1
    assert set(np.unique(border)) == {0, 1}
    out = np.array(T.Pad([1, 2, 3, 4], fill=[7, 8, 9])(photo))  # left, top, right, bottom
    assert out.shape == (64 + 2 + 4, 48 + 1 + 3, 3)
    np.testing.assert_array_equal(out[0, 0], [7, 8, 9])
    np.testing.assert_array_equal(out[2:66, 1:49], np.array(photo))


def test_random_crop_is_a_window_and_position_varies():
    rs = np.random.RandomState(1)
    src = rs.randint(0, 256, (26, 36, 3)).astype(np.uint8)  # 20x30 image padded by 3
    crop = T.RandomCrop([20, 30])
    offsets = set()
    for seed in range(60):
        out = np.array(crop(pil(src), random.Random(seed)))
        assert out.shape == (20, 30, 3)
        hits = [(t, l) for t in range(7) for l in range(7)
                if np.array_equal(src[t:t + 20, l:l + 30], out)]
        assert len(hits) == 1
        offsets.add(hits[0])
    tops, lefts = {t for t, _ in offsets}, {l for _, l in offsets}
    assert min(tops) == 0 and max(tops) == 6 and min(lefts) == 0 and max(lefts) == 6
    # smaller than the crop: zero-padded, centred
    out = np.array(crop(pil(np.full((10, 10, 3), 200)), random.Random(0)))
    assert out.shape == (20, 30, 3) and out[10, 15, 0] == 200 and out[0, 0, 0] == 0


def test_flip_mirrors(photo):
    arr = np.array(photo)
    np.testing.assert_array_equal(np.array(T.RandomHorizontalFlip(1.0)(photo, random.Random(0))), arr[:, ::-1])
    assert T.RandomHorizontalFlip(0.0)(photo, random.Random(0)) is photo
    chw = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(chw, random.Random(0)), chw[:, :, ::-1])
    np.testing.assert_array_equal(T.flip_chw(chw), chw[..., ::-1])
    flips = [T.RandomHorizontalFlip(0.5)(photo, random.Random(s)) is not photo for s in range(400)]
    assert 0.42 < np.mean(flips) < 0.58


def test_flip_chw_paddle_tensor():
    import paddle
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    np.testing.assert_array_equal(T.flip_chw(paddle.to_tensor(x)).numpy(), x[..., ::-1])


def test_normalize_exact_values():
    img = pil([[[0, 128, 255], [255, 0, 64]]])  # 1 x 2 RGB
    out = T.Normalize()(img)
    assert out.dtype == np.float32 and out.shape == (3, 1, 2) and out.flags["C_CONTIGUOUS"]
    expect = np.array([[[-1.0, 1.0]], [[128 / 127.5 - 1, -1.0]], [[1.0, 64 / 127.5 - 1]]], np.float32)
    np.testing.assert_allclose(out, expect, atol=1e-6)
    assert abs(out[1, 0, 0] - 0.00392157) < 1e-6
    imagenet = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])(img)
    np.testing.assert_allclose(imagenet[2, 0, 0], (1.0 - 0.406) / 0.225, rtol=1e-6)
    np.testing.assert_allclose(imagenet[0, 0, 1], (1.0 - 0.485) / 0.229, rtol=1e-6)
    with pytest.raises(ConfigError, match="std: must not contain 0"):
        T.Normalize(std=[0.5, 0, 0.5])


def _box(diff):
    rows, cols = np.where(diff.any(0))
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_random_erasing_box_area_and_only_inside():
    x = np.zeros((3, 60, 80), np.float32)
    op = T.RandomErasing(prob=1.0, mode="const", value=5.0)
    areas = []
    for seed in range(200):
        out = op(x, random.Random(seed))
        assert out is not x and not x.any()  # input untouched
        t, b, l, r = _box(out != 0)
        assert (out[:, t:b, l:r] == 5.0).all()  # a full rectangle on every channel ...
        assert (out != 0).sum() == 3 * (b - t) * (r - l)  # ... and nothing outside it
        frac = (b - t) * (r - l) / (60 * 80)
        assert 0.02 <= frac <= 0.33
        assert 0.3 * 0.8 <= (b - t) / (r - l) <= 1 / 0.3 * 1.25  # aspect, up to rounding
        areas.append(frac)
    assert min(areas) < 0.06 and max(areas) > 0.25


def test_random_erasing_modes_and_prob():
    x = np.full((3, 100, 100), 9.0, np.float32)
    out = T.RandomErasing(prob=1.0, sl=0.3, sh=0.33, mode="pixel")(x, random.Random(3))
    t, b, l, r = _box(out != 9.0)
    inside = out[:, t:b, l:r]
    assert inside.size > 3 * 2500 and abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05
    assert len(np.unique(inside[0])) > 100  # per-pixel noise
    out = T.RandomErasing(prob=1.0, mode="rand")(x, random.Random(3))
    t, b, l, r = _box(out != 9.0)
    assert all(len(np.unique(out[c, t:b, l:r])) == 1 for c in range(3))  # one value per channel
    assert len({float(out[c, t, l]) for c in range(3)}) == 3
    assert T.RandomErasing(prob=0.0)(x, random.Random(0)) is x
    hits = [T.RandomErasing(prob=0.5)(x, random.Random(s)) is not x for s in range(400)]
    assert 0.42 < np.mean(hits) < 0.58
    with pytest.raises(TypeError, match="after Normalize"):
        T.RandomErasing(prob=1.0)(Image.new("RGB", (8, 8)), random.Random(0))


def test_color_jitter_changes_within_bounds(photo):
    np.testing.assert_array_equal(np.array(T.ColorJitter()(photo, random.Random(0))), np.array(photo))
    arr = np.array(photo, np.float64)
    means = [np.array(T.ColorJitter(brightness=0.4)(photo, random.Random(s)), np.float64).mean() / arr.mean()
             for s in range(40)]
    assert 0.6 - 0.02 <= min(means) < 0.9 and 1.1 < max(means) <= 1.4 + 0.02


# ---------------------------------------------------------------- AutoAugment
def test_autoaugment_policy_table():
    assert len(T.IMAGENET_POLICY) == 25
    assert all(len(sub) == 2 for sub in T.IMAGENET_POLICY)
    names = {n for sub in T.IMAGENET_POLICY for n, _, _ in sub}
    assert names == set(T.AA_OPS) == {"AutoContrast", "Equalize", "Invert", "Rotate", "ShearX", "Posterize",
                                      "Solarize", "Color", "Contrast", "Sharpness"}
    assert T.IMAGENET_POLICY[0] == [("Posterize", 0.4, 8), ("Rotate", 0.6, 9)]
    assert T.IMAGENET_POLICY[18] == [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)]
    assert all(0 <= p <= 1 and 0 <= m <= 10 for sub in T.IMAGENET_POLICY for _, p, m in sub)


def test_autoaugment_prob(photo):
    ref = np.array(photo)
    never = T.AutoAugment(prob=0.0)
    assert all(np.array_equal(np.array(never(photo, random.Random(s))), ref) for s in range(30))
    always = T.AutoAugment(prob=1.0)
    changed = [not np.array_equal(np.array(always(photo, random.Random(s))), ref) for s in range(100)]
    # P(neither op of the drawn sub-policy fires) is 0.15 on average over the 25
    assert np.mean(changed) > 0.65
    half = [not np.array_equal(np.array(T.AutoAugment(0.5)(photo, random.Random(s))), ref) for s in range(300)]
    assert 0.32 < np.mean(half) < 0.53  # expected 0.5 * 0.85


def test_every_autoaugment_op_runs(photo, monkeypatch):
    calls = {}
    for name, fn in list(T.AA_OPS.items()):
        def wrapped(img, m, rng, fill, _fn=fn, _name=name):
            calls[_name] = calls.get(_name, 0) + 1
            out = _fn(img, m, rng, fill)
            assert isinstance(out, Image.Image) and out.size == img.size and out.mode == "RGB"
            return out
        monkeypatch.setitem(T.AA_OPS, name, wrapped)
    small = photo.resize((16, 16))
    aa = T.AutoAugment(prob=1.0)
    for s in range(700):
        aa(small, random.Random(s))
    assert set(calls) == set(T.AA_OPS), sorted(set(T.AA_OPS) - set(calls))


def test_autoaugment_ops_effects(photo):
    arr = np.array(photo).astype(np.int64)
    fill = (128, 128, 128)
    run = lambda name, m, seed=0: np.array(T.AA_OPS[name](photo, m, random.Random(seed), fill)).astype(np.int64)
    np.testing.assert_array_equal(run("Invert", 4), 255 - arr)
    np.testing.assert_array_equal(run("Solarize", 5), np.where(arr >= 128, 255 - arr, arr))  # threshold 128
    np.testing.assert_array_equal(run("Posterize", 5), arr & 0b11111100)  # int(2) + 4 = 6 bits
    assert run("Posterize", 10).tolist() == arr.tolist()  # 8 bits: unchanged
    ac = run("AutoContrast", 5)
    assert ac.min() == 0 and ac.max() == 255
    eq = run("Equalize", 8)
    assert eq.max() == 255 and not np.array_equal(eq, arr)
    rot = run("Rotate", 9)  # 27 degrees: corners come from outside the image
    assert tuple(rot[0, 0]) == fill and tuple(rot[-1, -1]) == fill
    assert np.abs(rot[32, 24] - arr[32, 24]).max() < 40  # the centre stays put
    for seed in range(4):  # shear about the top edge: row 0 ~unchanged, bottom shifted, a corner filled
        sh = run("ShearX", 5, seed)
        assert np.abs(sh[0] - arr[0]).max() <= 4 and np.abs(sh[-1] - arr[-1]).mean() > 10
        assert fill in (tuple(sh[-1, 0]), tuple(sh[-1, -1]))
    spread = lambda a: np.abs(a - a.mean(-1, keepdims=True)).mean()
    assert spread(run("Color", 0)) < 0.2 * spread(arr)  # factor 0.1: nearly grey
    assert run("Contrast", 8).std() > 1.3 * arr.std()  # factor 1.54
    sharp = run("Sharpness", 7)
    assert not np.array_equal(sharp, arr) and np.abs(sharp - arr).mean() < 20


# ---------------------------------------------------------------- pipelines
def test_default_pipelines_shape_range_and_determinism(photo):
    train = T.default_train_transforms([96, 64])
    assert [type(op).__name__ for op in train.ops] == [
        "AutoAugment", "Resize", "Pad", "RandomCrop", "RandomHorizontalFlip", "Normalize", "RandomErasing"]
    a = train(photo, random.Random(7))
    random.seed(123)
    np.random.seed(123)  # global state must not matter
    b = train(photo, random.Random(7))
    assert a.shape == (3, 96, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, train(photo, random.Random(8)))
    outs = [train(photo, random.Random(s)) for s in range(20)]
    assert len({o.tobytes() for o in outs}) == 20
    ev = T.default_eval_transforms((96, 64))
    e = ev(photo, random.Random(0))
    np.testing.assert_array_equal(e, ev(photo, random.Random(99)))
    assert e.shape == (3, 96, 64) and -1.0 <= e.min() and e.max() <= 1.0
    np.testing.assert_allclose(e, T.Normalize()(photo.resize((64, 96), Image.BICUBIC)))


def test_every_random_op_is_reproducible_from_the_rng(photo):
    ops = [T.AutoAugment(prob=1.0), T.AutoAugment(prob=1.0, magnitude_std=0.5), T.RandomCrop([40, 30]),
           T.RandomHorizontalFlip(), T.ColorJitter(0.3, 0.3, 0.3)]
    for op in ops:
        runs = [[np.array(op(photo, random.Random(s))) for s in range(40)] for _ in range(2)]
        assert all(np.array_equal(a, b) for a, b in zip(*runs)), op
        assert len({a.tobytes() for a in runs[0]}) > 1, op  # the seed matters
    x = T.Normalize()(photo)
    er = T.RandomErasing(prob=1.0)
    for s in range(20):
        np.testing.assert_array_equal(er(x, random.Random(s)), er(x, random.Random(s)))


def test_sample_results_independent_of_order(photo):
    other = photo.transpose(Image.ROTATE_180)
    t = T.default_train_transforms([48, 32])
    first = [t(photo, random.Random(1)), t(other, random.Random(2))]
    second = [t(other, random.Random(2)), t(photo, random.Random(1))][::-1]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_build_transforms_from_config():
    items = [{"AutoAugment": {"prob": 0.5}}, {"Resize": {"size": [384, 384], "interpolation": "bicubic"}},
             {"Pad": {"padding": 10}}, {"RandomCrop": {"size": [384, 384]}},
             {"RandomHorizontalFlip": {"prob": 0.5}}, {"Normalize": None}, {"RandomErasing": {"prob": 0.5, "mode": "pixel"}}]
    c = T.build_transforms(items, where="DataLoader.Train.transforms")
    assert isinstance(c, T.Compose) and len(c) == 7
    assert c.ops[1].size == (384, 384) and c.ops[2].padding == (10, 10, 10, 10)
    assert c.ops[5].mean == [0.5, 0.5, 0.5] and c.ops[6].mode == "pixel"
    assert "RandomErasing(prob=0.5" in repr(c)


@pytest.mark.parametrize("items, message", [
    ([{"Blur": {}}], r"W\.0: unknown transform 'Blur'; known: .*AutoAugment"),
    ([{"Resize": {"size": 8}, "Normalize": None}], r"W\.0: expected a single-key mapping"),
    (["Normalize"], r"W\.0: expected a single-key mapping"),
    ([{"Resize": {"size": 8, "mode": 1}}], r"W\.0\.Resize: unknown key\(s\) \['mode'\]; accepted: \['size', 'interpolation'\]"),
    ([{"Resize": {}}], r"W\.0\.Resize: missing required key\(s\) \['size'\]"),
    ([{"Resize": {"size": [0, 8]}}], r"W\.0\.Resize\.size: expected \[height, width\] of positive ints"),
    ([{"Normalize": None}, {"RandomHorizontalFlip": {"prob": 1.5}}], r"W\.1\.RandomHorizontalFlip\.prob: 1\.5 is out of range; allowed: \[0, 1\]"),
    ([{"RandomErasing": None}, {"Normalize": None}], r"W\.0\.RandomErasing: works on a CHW array but gets a PIL image; put it after Normalize"),
    ([{"Normalize": None}, {"Resize": {"size": 8}}], r"W\.1\.Resize: works on a PIL image but gets a CHW array; put it before Normalize"),
    ([{"Resize": {"size": 8}}], r"W: must end with a CHW array \(add a Normalize step\)"),
    ([{"RandomErasing": {"sl": 0.5, "sh": 0.2}}], r"sl/sh: expected 0 < sl <= sh < 1"),
    ([{"AutoAugment": {"policy": "svhn"}}], r"W\.0\.AutoAugment\.policy: expected one of \['imagenet', 'original'\]"),
    ([{"Normalize": "yes"}], r"W\.0\.Normalize: expected a mapping of arguments or null"),
])
def test_build_transforms_errors(items, message):
    with pytest.raises(ConfigError, match=message):
        T.build_transforms(items, where="W")


def test_train_pipeline_speed():
    """A 384x384 training sample (person-sized source image) takes a few ms."""
    rs = np.random.RandomState(0)
    img = pil(rs.randint(0, 256, (256, 128, 3)))
    t = T.default_train_transforms([384, 384])
    t(img, random.Random(0))
    start = time.perf_counter()
    for s in range(30):
        t(img, random.Random(s))
    per_sample = (time.perf_counter() - start) / 30
    assert per_sample < 0.05, f"{per_sample * 1000:.1f} ms per sample"
