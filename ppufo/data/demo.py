"""Small, learnable synthetic datasets written in each dataset's real on-disk layout.

``render_identity(identity_seed, view_seed, size, style)`` draws one image of one identity:

* the identity (``identity_seed``) fixes what a retrieval model should learn: 2-3 colours
  (+ an accessory colour), a part layout (person: head/hair, torso, sleeves, trousers or
  skirt, shoes, bag, hat; vehicle: body type, cabin, windows, two-tone or decal stripe,
  wheels; product: object shape, label band, handle/neck/stem) and a texture (plain,
  stripes, checker or dots) with its own frequency and angle;
* the view (``view_seed``) changes what it should ignore: position, scale, small rotation,
  mirroring, leg stride, background clutter, an occluder now and then, blur and noise;
* the camera (``camera``, a seed; default: derived from the view) sets the scene
  background and the lighting: brightness, contrast and a colour cast.

So images of one identity share colours, layout and texture across cameras, while cameras
shift colours and backgrounds: cross-camera retrieval is learnable but not trivial.

Writers (``write_market1501`` ... ``write_sop``) produce the official folder structure,
file-name patterns and list files with small default sizes; ``write_all`` writes every demo
set (face sets through ``demo_face``). Everything is deterministic given ``seed``.
"""
import json
import os
import time

import numpy as np
from PIL import Image

STYLES = ("person", "vehicle", "product")
SIZES = {"person": (128, 64), "vehicle": (96, 128), "product": (96, 96)}  # (H, W)

_ID_TAG, _VIEW_TAG, _CAM_TAG = 0x1D3, 0x7E5, 0xCA3
_SKIN = np.array([[236, 200, 170], [222, 176, 140], [190, 140, 100], [140, 96, 64], [96, 64, 44]],
                 np.float32)
_HAIR = np.array([[25, 20, 18], [70, 45, 28], [120, 80, 45], [200, 170, 110], [150, 150, 150]],
                 np.float32)


def _rng(*words):
    return np.random.default_rng([int(w) % (1 << 63) for w in words])


def _hsv(h, s, v):
    """One RGB colour (float32, 0..255) from hue/saturation/value in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255


def _palette(r, n):
    """n colours with well separated hues; about one in five is a grey/black/white."""
    h0 = r.uniform()
    out = []
    for k in range(n):
        h = (h0 + k / n + r.uniform(-0.08, 0.08)) % 1.0
        if r.uniform() < 0.2:
            out.append(_hsv(h, r.uniform(0, 0.12), r.choice([0.15, 0.5, 0.92])))
        else:
            out.append(_hsv(h, r.uniform(0.45, 1.0), r.uniform(0.35, 0.95)))
    return out


def _identity(identity_seed, style):
    r = _rng(identity_seed, _ID_TAG, STYLES.index(style))
    a = {"c": _palette(r, 4), "tex": int(r.choice(4, p=[0.3, 0.3, 0.2, 0.2])),
         "freq": r.uniform(3, 9), "angle": r.uniform(0, np.pi)}
    if style == "person":
        a.update(skin=_SKIN[r.integers(len(_SKIN))], hair=_HAIR[r.integers(len(_HAIR))],
                 waist=r.uniform(0.5, 0.6), torso=r.uniform(0.2, 0.3), leg=r.uniform(0.08, 0.12),
                 skirt=r.uniform() < 0.25, short=r.uniform() < 0.4, bag=int(r.choice(3, p=[0.5, 0.3, 0.2])),
                 hat=r.uniform() < 0.2, long_hair=r.uniform() < 0.35)
    elif style == "vehicle":
        kind = int(r.choice(5, p=[0.35, 0.25, 0.15, 0.15, 0.1]))  # sedan suv van truck bus
        a.update(kind=kind, top=[0.5, 0.42, 0.34, 0.45, 0.22][kind], roof=[0.3, 0.22, 0.16, 0.22, 0.12][kind],
                 deco=int(r.integers(3)), band=r.uniform(0.52, 0.66), wheel=r.uniform(0.08, 0.11),
                 glass=np.array([40, 55, 75], np.float32) * r.uniform(0.7, 1.4))
    elif style == "product":
        a.update(shape=int(r.integers(5)), aspect=r.uniform(0.45, 0.9), band=r.uniform(0.35, 0.65),
                 band_w=r.uniform(0.06, 0.18))
    else:
        raise ValueError(f"style {style!r}: expected one of {STYLES}")
    return a


def _texture(a, u, t):
    """Boolean texture field of the identity on model coordinates."""
    ang, f = a["angle"], a["freq"]
    s = u * np.cos(ang) + t * np.sin(ang)
    if a["tex"] == 1:
        return np.sin(s * f * 2 * np.pi) > 0
    if a["tex"] == 2:
        return ((np.floor(u * f) + np.floor(t * f * 2)) % 2) == 0
    if a["tex"] == 3:
        return (np.sin(u * f * 4 * np.pi) * np.sin(t * f * 4 * np.pi)) > 0.45
    return np.zeros_like(u, bool)


def _ellipse(u, t, cu, ct, ru, rt):
    return ((u - cu) / ru) ** 2 + ((t - ct) / rt) ** 2 < 1


def _box(u, t, u0, u1, t0, t1):
    return (u >= u0) & (u < u1) & (t >= t0) & (t < t1)


def _person(a, v, u, t):
    c0, c1, c2, c3 = a["c"]
    tex = _texture(a, u, t)
    top = np.where(tex[..., None], c1, c0)
    w, tw, lw = a["waist"], a["torso"], a["leg"]
    du = np.abs(u - 0.5)
    stride = v.uniform(0, 0.07)
    parts = []
    if a["bag"] == 1:  # backpack behind the torso, visible at one side
        parts.append((_box(u, t, 0.5 + tw - 0.02, 0.5 + tw + 0.12, 0.2, w - 0.06), c3))
    legs = (np.abs(u - 0.5 + lw + stride) < lw) | (np.abs(u - 0.5 - lw - stride) < lw)
    if a["skirt"]:
        skirt = (t >= w) & (t < w + 0.2) & (du < tw * 0.8 + (t - w) * 0.6)
        parts += [(legs & (t >= w) & (t < 0.93), a["skin"]), (skirt, c2)]
    else:
        parts.append((legs & (t >= w) & (t < 0.93), c2))
    parts.append((legs & (t >= 0.93) & (t < 0.975), c3 * 0.4))
    arms = (du >= tw) & (du < tw + 0.09) & (t >= 0.18) & (t < w + 0.02)
    if a["short"]:
        parts += [(arms & (t < 0.3), top), (arms & (t >= 0.3), a["skin"])]
    else:
        parts.append((arms, top))
    parts.append(((du < tw) & (t >= 0.17) & (t < w + 0.01), top))
    parts.append((_box(u, t, 0.45, 0.55, 0.14, 0.18), a["skin"]))  # neck
    head = _ellipse(u, t, 0.5, 0.1, 0.12, 0.055)
    parts.append((head, a["skin"]))
    hair = head & (t < 0.085)
    if a["long_hair"]:
        hair |= _box(u, t, 0.38, 0.62, 0.06, 0.2) & ~_ellipse(u, t, 0.5, 0.115, 0.085, 0.04)
    parts.append((hair, a["hair"]))
    if a["hat"]:
        parts.append((_box(u, t, 0.36, 0.64, 0.035, 0.075), c3))
    if a["bag"] == 2:  # handbag at the hand
        parts.append((_box(u, t, 0.5 + tw + 0.02, 0.5 + tw + 0.16, w - 0.02, w + 0.12), c3))
    return parts


def _vehicle(a, v, u, t):
    c0, c1, c2, c3 = a["c"]
    top, roof, kind = a["top"], a["roof"], a["kind"]
    body = _box(u, t, 0.05, 0.95, top, 0.8) & ~(_box(u, t, 0.05, 0.09, top, top + 0.05)
                                                 | _box(u, t, 0.91, 0.95, top, top + 0.05))
    paint = np.broadcast_to(c0, u.shape + (3,))
    if a["deco"] == 1:    # two-tone: lower body in the second colour
        paint = np.where((t > a["band"])[..., None], c1, c0)
    elif a["deco"] == 2:  # the identity's texture as a decal band
        paint = np.where(((np.abs(t - a["band"]) < 0.06) & _texture(a, u, t))[..., None], c1, c0)
    parts = [(body, paint)]
    if kind == 3:  # truck: cargo box behind the cab
        parts.append((_box(u, t, 0.05, 0.62, roof, top + 0.01), c2))
        cab_u0, cab_u1 = 0.64, 0.9
    else:
        cab_u0, cab_u1 = (0.07, 0.93) if kind in (2, 4) else (0.22, 0.82)
    slope = 0.0 if kind in (2, 3, 4) else 0.6
    cab = (t >= roof) & (t < top) & (u >= cab_u0 + (top - t) * slope) & (u < cab_u1 - (top - t) * slope)
    parts.append((cab, c0))
    win = cab & (t > roof + 0.03) & (t < top - 0.02) & (u >= cab_u0 + (top - t) * slope + 0.03) \
        & (u < cab_u1 - (top - t) * slope - 0.03)
    n_win = 5 if kind == 4 else 2
    pillars = np.abs(((u - cab_u0) / (cab_u1 - cab_u0) * n_win) % 1 - 0.5) > 0.44
    parts.append((win & ~pillars, a["glass"]))
    parts.append((_box(u, t, 0.91, 0.95, top + 0.06, top + 0.12), np.array([240, 220, 140], np.float32)))
    parts.append((_box(u, t, 0.05, 0.08, top + 0.06, top + 0.12), np.array([200, 30, 30], np.float32)))
    rw = a["wheel"]
    for cu in (0.22, 0.78):
        parts.append((_ellipse(u, t, cu, 0.8, rw * 0.75, rw), np.array([22, 22, 24], np.float32)))
        parts.append((_ellipse(u, t, cu, 0.8, rw * 0.35, rw * 0.45), c3 * 0.5 + 100))
    return parts


def _product(a, v, u, t):
    c0, c1, c2, _ = a["c"]
    tex = _texture(a, u, t)
    paint = np.where(tex[..., None], c1, c0)
    hw, shape = 0.4 * a["aspect"], a["shape"]
    if shape == 0:    # round object (ball, pot)
        obj = _ellipse(u, t, 0.5, 0.52, hw, 0.4)
        extra = []
    elif shape == 1:  # box
        obj = _box(u, t, 0.5 - hw, 0.5 + hw, 0.15, 0.88)
        extra = [(_box(u, t, 0.5 - hw, 0.5 + hw, 0.15, 0.22), c2)]
    elif shape == 2:  # bottle / kettle: body and neck
        obj = _box(u, t, 0.5 - hw, 0.5 + hw, 0.35, 0.9) | _ellipse(u, t, 0.5, 0.35, hw, 0.12)
        extra = [(_box(u, t, 0.44, 0.56, 0.1, 0.3), c2)]
    elif shape == 3:  # mug: body and handle
        obj = _box(u, t, 0.5 - hw, 0.5 + hw * 0.6, 0.25, 0.85)
        ring = _ellipse(u, t, 0.5 + hw * 0.6, 0.55, 0.16, 0.18) & ~_ellipse(u, t, 0.5 + hw * 0.6, 0.55, 0.09, 0.1)
        extra = [(ring & (u > 0.5 + hw * 0.6), c2)]
    else:             # lamp: shade, stem, foot
        obj = (t >= 0.1) & (t < 0.45) & (np.abs(u - 0.5) < 0.12 + (t - 0.1) * hw * 2)
        extra = [(_box(u, t, 0.47, 0.53, 0.45, 0.85), c2), (_box(u, t, 0.5 - hw * 0.7, 0.5 + hw * 0.7, 0.85, 0.9), c2)]
    band = obj & (np.abs(t - a["band"]) < a["band_w"] / 2)
    return [(obj, paint)] + extra + [(band, c2)]


_DRAW = {"person": _person, "vehicle": _vehicle, "product": _product}


def _camera(camera, style):
    """Scene and lighting of one camera."""
    r = _rng(camera, _CAM_TAG, STYLES.index(style))
    if style == "product":  # studio-like shots: light, nearly uniform backgrounds
        bg = np.full(3, r.uniform(200, 250), np.float32) + r.uniform(-12, 12, 3).astype(np.float32)
        floor = bg * r.uniform(0.85, 1.0)
    else:
        bg = r.uniform(60, 190, 3).astype(np.float32)
        floor = r.uniform(50, 170, 3).astype(np.float32)
    return {"bg": bg, "floor": floor, "horizon": r.uniform(0.55, 0.8) if style != "product" else 0.9,
            "grad": r.uniform(-40, 40), "gain": r.uniform(0.8, 1.2), "contrast": r.uniform(0.8, 1.15),
            "cast": r.uniform(0.88, 1.12, 3).astype(np.float32), "shift": r.uniform(-12, 12, 3).astype(np.float32),
            "noise": r.uniform(2, 7), "blur": r.uniform(0, 0.25)}


def render_identity(identity_seed, view_seed, size, style, camera=None):
    """uint8 array (H, W, 3) of identity ``identity_seed`` seen in view ``view_seed``.

    size: (H, W). style: "person", "vehicle" or "product". camera: seed of the camera's
    scene and lighting (default: derived from ``view_seed``).
    """
    if style not in _DRAW:
        raise ValueError(f"style {style!r}: expected one of {STYLES}")
    h, w = int(size[0]), int(size[1])
    a = _identity(identity_seed, style)
    v = _rng(identity_seed, view_seed, _VIEW_TAG)
    cam = _camera(view_seed if camera is None else camera, style)

    # view geometry: pixel -> model coordinates (u across, t down, both 0..1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = ((xx + 0.5) / w - 0.5) * (w / h)   # in units of the image height
    y = (yy + 0.5) / h - 0.5
    scale = v.uniform(0.9, 1.06)
    dx, dy = v.uniform(-0.05, 0.05) * (w / h), v.uniform(-0.035, 0.035)
    rot = np.deg2rad(v.uniform(-5, 5) if style != "product" else v.uniform(-15, 15))
    cr, sr = np.cos(rot), np.sin(rot)
    px, py = (x - dx) / scale, (y - dy) / scale
    u = (cr * px + sr * py) / (w / h) + 0.5
    t = -sr * px + cr * py + 0.5
    if v.uniform() < 0.5:
        u = 1 - u

    # background: the camera's scene plus view-specific clutter
    img = np.empty((h, w, 3), np.float32)
    yn = (yy / h)[..., None]
    img[:] = cam["bg"] + cam["grad"] * (yn - 0.5)
    img = np.where((yn > cam["horizon"] + v.uniform(-0.05, 0.05)), cam["floor"], img)
    if style != "product":
        for _ in range(int(v.integers(0, 3))):
            x0, y0 = v.uniform(-0.2, 1.0, 2)
            bw, bh = v.uniform(0.1, 0.4, 2)
            m = (xx / w >= x0) & (xx / w < x0 + bw) & (yy / h >= y0) & (yy / h < y0 + bh)
            img[m] = v.uniform(40, 200, 3)

    for mask, color in _DRAW[style](a, v, u, t):
        if np.ndim(color) == 1:
            img[mask] = color
        else:
            img[mask] = color[mask]

    if style != "product" and v.uniform() < 0.15:  # occluder (pole, another object)
        if v.uniform() < 0.5:
            x0 = v.uniform(0, 0.8)
            m = (xx / w >= x0) & (xx / w < x0 + v.uniform(0.08, 0.2))
        else:
            m = yy / h >= v.uniform(0.75, 0.9)
        img[m] = v.uniform(30, 200, 3)

    # lighting, blur, noise
    gain = cam["gain"] * v.uniform(0.9, 1.1)
    img = ((img - 128) * cam["contrast"] + 128) * gain * cam["cast"] + cam["shift"]
    b = min(0.33, cam["blur"] + v.uniform(0, 0.15))
    if b > 0.02:
        img[1:-1] = (1 - 2 * b) * img[1:-1] + b * (img[:-2] + img[2:])
        img[:, 1:-1] = (1 - 2 * b) * img[:, 1:-1] + b * (img[:, :-2] + img[:, 2:])
    img += v.normal(0, cam["noise"] + v.uniform(0, 4), img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- writers

_DATASET_TAG = {"market1501": 1, "dukemtmc": 2, "msmt17": 3, "veri776": 4, "vehicleid": 5,
                "veriwild": 6, "sop": 7}
_SPLIT_TAG = {"train": 0, "test": 1, "junk": 2, "distractor": 3}


def identity_seed(seed, dataset, split, pid):
    """Identity seed of ``pid`` in ``split`` of demo ``dataset``: distinct across datasets and
    train/test splits, so merged demo sets never share an appearance."""
    return ((int(seed) * 16 + _DATASET_TAG[dataset]) * 4 + _SPLIT_TAG[split]) * 10 ** 7 + int(pid)


def camera_seed(seed, dataset, cam):
    return (int(seed) * 16 + _DATASET_TAG[dataset]) * 1000 + int(cam)


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)


def _draw(seed, dataset, split, pid, view, cam, style):
    return render_identity(identity_seed(seed, dataset, split, pid), view, SIZES[style], style,
                           camera_seed(seed, dataset, cam))


def _camera_plan(r, num_ids, imgs_per_id, num_cams, min_cams):
    """Cameras of each identity's images (0-based): the first ``min_cams`` (or more) images are
    on distinct cameras, the rest on cameras already used by that identity."""
    if num_cams < min_cams:
        raise ValueError(f"num_cams={num_cams}: need at least {min_cams} cameras")
    if imgs_per_id < min_cams:
        raise ValueError(f"imgs_per_id={imgs_per_id}: need at least {min_cams} images per identity")
    plan = []
    for _ in range(num_ids):
        k = int(r.integers(min_cams, min(num_cams, imgs_per_id, min_cams + 2) + 1))
        cams = r.choice(num_cams, size=k, replace=False)
        plan.append([int(c) for c in cams] + [int(c) for c in r.choice(cams, imgs_per_id - k)])
    return plan


def _write_lines(path, lines, header=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{s}\n" for s in ([header] if header else []) + list(lines)))


def write_market1501(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=6, seed=0,
                     queries_per_id=2, num_distractors=4, num_junk=4):
    """bounding_box_train/, query/ (``queries_per_id`` per test id, distinct cameras) and
    bounding_box_test/ (the rest, plus distractors 0000_* and junk -1_*)."""
    r = _rng(seed, _DATASET_TAG["market1501"])
    pids = r.choice(np.arange(1, 1502), num_train_ids + num_test_ids, replace=False)
    train_ids, test_ids = sorted(pids[:num_train_ids]), sorted(pids[num_train_ids:])
    counts = {"bounding_box_train": 0, "query": 0, "bounding_box_test": 0}

    def name(pid, cam, n):
        seq, frame, box = int(r.integers(1, 7)), 100 * (n + 1) + int(r.integers(100)), int(r.integers(1, 4))
        return f"{pid:04d}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg"

    for split, ids, folder_of in [("train", train_ids, lambda n: "bounding_box_train"),
                                  ("test", test_ids, lambda n: "query" if n < queries_per_id else "bounding_box_test")]:
        plan = _camera_plan(r, len(ids), imgs_per_id, num_cams, queries_per_id + 1)
        for pid, cams in zip(ids, plan):
            for n, cam in enumerate(cams):
                folder = folder_of(n)
                _save(os.path.join(root, folder, name(pid, cam, n)),
                      _draw(seed, "market1501", split, pid, n, cam, "person"))
                counts[folder] += 1
    for n in range(num_distractors):
        cam = n % num_cams
        _save(os.path.join(root, "bounding_box_test", f"0000_c{cam + 1}s1_{100 * (n + 1):06d}_00.jpg"),
              _draw(seed, "market1501", "distractor", n, 0, cam, "person"))
    for n in range(num_junk):
        cam = (n + 1) % num_cams
        _save(os.path.join(root, "bounding_box_test", f"-1_c{cam + 1}s1_{100 * (n + 1):06d}_00.jpg"),
              _draw(seed, "market1501", "junk", n, 0, cam, "person"))
    counts["bounding_box_test"] += num_distractors + num_junk
    return {"images": counts, "train_ids": num_train_ids, "test_ids": num_test_ids,
            "distractors": num_distractors, "junk": num_junk}


def write_dukemtmc(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, seed=0,
                   queries_per_id=2, num_gallery_only_ids=2):
    """bounding_box_train/, query/, bounding_box_test/ with ``0001_c2_f0046182.jpg`` names; like
    the real set, some identities appear only in the gallery."""
    r = _rng(seed, _DATASET_TAG["dukemtmc"])
    n_all = num_train_ids + num_test_ids + num_gallery_only_ids
    pids = sorted(r.choice(np.arange(1, 7141), n_all, replace=False))
    order = r.permutation(n_all)
    train_ids = sorted(pids[i] for i in order[:num_train_ids])
    test_ids = sorted(pids[i] for i in order[num_train_ids:num_train_ids + num_test_ids])
    extra_ids = sorted(pids[i] for i in order[num_train_ids + num_test_ids:])
    counts = {"bounding_box_train": 0, "query": 0, "bounding_box_test": 0}
    jobs = [("train", train_ids, 0), ("test", test_ids, queries_per_id), ("test", extra_ids, 0)]
    for split, ids, nq in jobs:
        plan = _camera_plan(r, len(ids), imgs_per_id, num_cams, max(2, nq + 1))
        for pid, cams in zip(ids, plan):
            for n, cam in enumerate(cams):
                folder = "bounding_box_train" if split == "train" else ("query" if n < nq else "bounding_box_test")
                frame = 1000 * (n + 1) + int(r.integers(1000))
                _save(os.path.join(root, folder, f"{pid:04d}_c{cam + 1}_f{frame:07d}.jpg"),
                      _draw(seed, "dukemtmc", split, pid, n, cam, "person"))
                counts[folder] += 1
    return {"images": counts, "train_ids": num_train_ids, "test_ids": num_test_ids,
            "gallery_only_ids": num_gallery_only_ids}


def write_msmt17(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=15, seed=0,
                 queries_per_id=2, val_per_id=1, version="V1"):
    """train/ + test/ (V1; V2: mask_train_v2/ + mask_test_v2/) with <pid>/<file> images and
    list_{train,val,query,gallery}.txt; val holds ``val_per_id`` images of every training id.
    Test pids restart at 0, as in the official lists."""
    r = _rng(seed, _DATASET_TAG["msmt17"])
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists = {"train": [], "val": [], "query": [], "gallery": []}
    tods = ("morning", "noon", "afternoon")
    for split, n_ids, folder in [("train", num_train_ids, train_dir), ("test", num_test_ids, test_dir)]:
        plan = _camera_plan(r, n_ids, imgs_per_id, num_cams, queries_per_id + 1 if split == "test" else 2)
        for pid, cams in enumerate(plan):
            for n, cam in enumerate(cams):
                day = f"{int(r.integers(3, 5)):02d}{int(r.integers(1, 29)):02d}{tods[int(r.integers(3))]}"
                frame, k = int(r.integers(1, 9999)), int(r.integers(0, 3))
                rel = f"{pid:04d}/{pid:04d}_{n:03d}_{cam + 1:02d}_{day}_{frame:04d}_{k}.jpg"
                _save(os.path.join(root, folder, rel), _draw(seed, "msmt17", split, pid, n, cam, "person"))
                if split == "train":
                    lists["val" if n >= imgs_per_id - val_per_id else "train"].append(f"{rel} {pid}")
                else:
                    lists["query" if n < queries_per_id else "gallery"].append(f"{rel} {pid}")
    for name, lines in lists.items():
        _write_lines(os.path.join(root, f"list_{name}.txt"), lines)
    return {"images": {k: len(v) for k, v in lists.items()}, "train_ids": num_train_ids, "test_ids": num_test_ids}


def write_veri776(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, seed=0,
                  queries_per_id=1):
    """image_train/, image_query/, image_test/ + name_{train,query,test}.txt."""
    r = _rng(seed, _DATASET_TAG["veri776"])
    vids = r.choice(np.arange(1, 777), num_train_ids + num_test_ids, replace=False)
    names = {"train": [], "query": [], "test": []}
    for split, ids in [("train", sorted(vids[:num_train_ids])), ("test", sorted(vids[num_train_ids:]))]:
        plan = _camera_plan(r, len(ids), imgs_per_id, num_cams, queries_per_id + 1)
        for vid, cams in zip(ids, plan):
            for n, cam in enumerate(cams):
                part = "train" if split == "train" else ("query" if n < queries_per_id else "test")
                name = f"{vid:04d}_c{cam + 1:03d}_{1000 * (n + 1) + int(r.integers(1000)):08d}_{int(r.integers(2))}.jpg"
                _save(os.path.join(root, f"image_{part}", name), _draw(seed, "veri776", split, vid, n, cam, "vehicle"))
                names[part].append(name)
    for part, files in names.items():
        _write_lines(os.path.join(root, f"name_{part}.txt"), files)
    return {"images": {k: len(v) for k, v in names.items()}, "train_ids": num_train_ids, "test_ids": num_test_ids}


def write_vehicleid(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=4, seed=0):
    """image/<image_id>.jpg + train_test_split/train_list.txt and test_list_{800,1600,2400}.txt
    (lines ``image_id vehicle_id``); the smaller test lists hold a subset of the identities of
    the larger ones (800/2400, 1600/2400 of them), as in the real set."""
    r = _rng(seed, _DATASET_TAG["vehicleid"])
    n_img = (num_train_ids + num_test_ids) * imgs_per_id
    image_ids = iter(sorted(r.choice(np.arange(1, 10 * n_img + 1), n_img, replace=False)))
    vids = r.permutation(np.arange(1, num_train_ids + num_test_ids + 1))
    rows = {"train": [], "test": []}
    for split, ids in [("train", sorted(vids[:num_train_ids])), ("test", sorted(vids[num_train_ids:]))]:
        plan = _camera_plan(r, len(ids), imgs_per_id, num_cams, 2)
        for vid, cams in zip(ids, plan):
            for n, cam in enumerate(cams):
                img = next(image_ids)
                _save(os.path.join(root, "image", f"{img:07d}.jpg"),
                      _draw(seed, "vehicleid", split, vid, n, cam, "vehicle"))
                rows[split].append((f"{img:07d}", int(vid)))
    _write_lines(os.path.join(root, "train_test_split", "train_list.txt"), [f"{i} {v}" for i, v in rows["train"]])
    test_ids = sorted({v for _, v in rows["test"]})
    sizes = {}
    for size in (800, 1600, 2400):
        keep = set(test_ids[:max(1, len(test_ids) * size // 2400)])
        lines = [f"{i} {v}" for i, v in rows["test"] if v in keep]
        _write_lines(os.path.join(root, "train_test_split", f"test_list_{size}.txt"), lines)
        sizes[size] = {"images": len(lines), "ids": len(keep)}
    return {"images": {"train": len(rows["train"]), "test": len(rows["test"])}, "train_ids": num_train_ids,
            "test_lists": sizes}


_MODELS = ("Volkswagen Lavida", "Buick Excelle", "Toyota Corolla", "Honda Accord", "Wuling Hongguang",
           "Hyundai Elantra", "Nissan Sylphy", "Ford Focus")
_TYPES = ("sedan", "SUV", "MPV", "truck", "bus")
_COLOURS = {"black": (20, 20, 20), "white": (235, 235, 235), "gray": (128, 128, 128), "red": (200, 30, 30),
            "blue": (40, 70, 190), "green": (40, 150, 60), "yellow": (220, 200, 40), "brown": (120, 80, 40)}


def _colour_name(rgb):
    names = list(_COLOURS)
    ref = np.array([_COLOURS[n] for n in names], np.float32)
    return names[int(np.argmin(((ref - rgb) ** 2).sum(1)))]


def write_veriwild(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=12, seed=0,
                   queries_per_id=1, list_style="original"):
    """images/<vid>/<img>.jpg, train_test_split/vehicle_info.txt and the split lists.

    list_style "original": train_list.txt, test_<n>.txt (gallery) and test_<n>_query.txt with
    lines ``vid/img``. list_style "id" (the re-issued lists used by fast-reid):
    train_list_start0.txt, test_<n>_id.txt and test_<n>_id_query.txt with lines
    ``vid/img.jpg pid camid`` (train pids relabelled from 0). n in 3000/5000/10000 keep
    3/10, 1/2 and all of the test identities.
    """
    if list_style not in ("original", "id"):
        raise ValueError(f"list_style={list_style!r}: expected 'original' or 'id'")
    r = _rng(seed, _DATASET_TAG["veriwild"])
    vids = r.choice(np.arange(1, 40672), num_train_ids + num_test_ids, replace=False)
    info, rows, img_no = [], {"train": [], "query": [], "gallery": []}, 0
    cam_ids = sorted(r.choice(np.arange(1, 175), num_cams, replace=False))
    for split, ids in [("train", sorted(vids[:num_train_ids])), ("test", sorted(vids[num_train_ids:]))]:
        plan = _camera_plan(r, len(ids), imgs_per_id, num_cams, queries_per_id + 1)
        for vid, cams in zip(ids, plan):
            a = _identity(identity_seed(seed, "veriwild", split, vid), "vehicle")
            model, vtype, colour = _MODELS[int(vid) % len(_MODELS)], _TYPES[a["kind"]], _colour_name(a["c"][0])
            for n, cam in enumerate(cams):
                img_no += 1
                key = f"{vid:05d}/{img_no:06d}"
                _save(os.path.join(root, "images", key + ".jpg"),
                      _draw(seed, "veriwild", split, vid, n, cam, "vehicle"))
                day, hh, mm, ss = (int(r.integers(1, 29)), int(r.integers(6, 20)), int(r.integers(60)),
                                   int(r.integers(60)))
                stamp = f"2018-03-{day:02d} {hh:02d}:{mm:02d}:{ss:02d}"
                info.append(f"{key};{cam_ids[cam]};{stamp};{model};{vtype};{colour}")
                part = "train" if split == "train" else ("query" if n < queries_per_id else "gallery")
                rows[part].append((key, int(vid), int(cam_ids[cam])))
    split_dir = os.path.join(root, "train_test_split")
    _write_lines(os.path.join(split_dir, "vehicle_info.txt"), info)
    if list_style == "original":
        _write_lines(os.path.join(split_dir, "train_list.txt"), [k for k, _, _ in rows["train"]])
    else:
        relabel = {v: i for i, v in enumerate(sorted({v for _, v, _ in rows["train"]}))}
        _write_lines(os.path.join(split_dir, "train_list_start0.txt"),
                     [f"{k}.jpg {relabel[v]} {c}" for k, v, c in rows["train"]])
    test_ids = sorted({v for _, v, _ in rows["query"]})
    sizes = {}
    for size in (3000, 5000, 10000):
        keep = set(test_ids[:max(1, len(test_ids) * size // 10000)])
        q = [row for row in rows["query"] if row[1] in keep]
        g = [row for row in rows["gallery"] if row[1] in keep]
        for part, sel in (("query", q), ("gallery", g)):
            if list_style == "original":
                name = f"test_{size}_query.txt" if part == "query" else f"test_{size}.txt"
                lines = [k for k, _, _ in sel]
            else:
                name = f"test_{size}_id_query.txt" if part == "query" else f"test_{size}_id.txt"
                lines = [f"{k}.jpg {v} {c}" for k, v, c in sel]
            _write_lines(os.path.join(split_dir, name), lines)
        sizes[size] = {"query": len(q), "gallery": len(g), "ids": len(keep)}
    return {"images": {"train": len(rows["train"]), "test": len(rows["query"]) + len(rows["gallery"])},
            "train_ids": num_train_ids, "test_lists": sizes, "list_style": list_style}


_SUPER = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
          "stapler", "table", "toaster")


def write_sop(root, num_train_classes=30, num_test_classes=20, imgs_per_class=6, seed=0):
    """Ebay_train.txt / Ebay_test.txt (header ``image_id class_id super_class_id path``) and
    images at <super>_final/<product>_<n>.JPG; class ids continue from train into test and
    consecutive classes share a super class, as in the real set."""
    counts = {}
    for split, first, n_cls in [("train", 1, num_train_classes), ("test", num_train_classes + 1, num_test_classes)]:
        lines, image_id = [], 1
        for c in range(first, first + n_cls):
            sup = (c - first) * len(_SUPER) // n_cls
            for n in range(imgs_per_class):
                rel = f"{_SUPER[sup]}_final/{c}_{n}.JPG"
                _save(os.path.join(root, rel),
                      render_identity(identity_seed(seed, "sop", split, c), n, SIZES["product"], "product",
                                      camera_seed(seed, "sop", c * 100 + n)))
                lines.append(f"{image_id} {c} {sup + 1} {rel}")
                image_id += 1
        _write_lines(os.path.join(root, f"Ebay_{split}.txt"), lines, header="image_id class_id super_class_id path")
        counts[split] = len(lines)
    return {"images": counts, "train_classes": num_train_classes, "test_classes": num_test_classes}


def _ms1m(root, seed):
    from .demo_face import write_ms1m_recordio
    return write_ms1m_recordio(root, num_ids=40, imgs_per_id=10, seed=seed)


def _face_folder(root, seed):
    from .demo_face import write_face_folder
    return write_face_folder(root, num_ids=40, imgs_per_id=10, seed=seed)


# the six verification sets of the UFO tables; pair counts keep the real 6,000 : 7,000 ratio
FACE_VAL_PAIRS = {"lfw": 120, "cplfw": 120, "calfw": 120, "cfp_ff": 140, "cfp_fp": 140, "agedb_30": 120}


def _faces_val(root, seed):
    from .demo_face import write_verification_bin
    return {name: write_verification_bin(os.path.join(root, f"{name}.bin"), num_pairs=n, seed=seed + 31 * i)
            for i, (name, n) in enumerate(FACE_VAL_PAIRS.items())}


WRITERS = {
    "market1501": lambda root, seed: write_market1501(root, seed=seed),
    "dukemtmc": lambda root, seed: write_dukemtmc(root, seed=seed),
    "msmt17": lambda root, seed: write_msmt17(root, seed=seed),
    "veri776": lambda root, seed: write_veri776(root, seed=seed),
    "vehicleid": lambda root, seed: write_vehicleid(root, seed=seed),
    "veriwild": lambda root, seed: write_veriwild(root, seed=seed),
    "sop": lambda root, seed: write_sop(root, seed=seed),
    "ms1m": _ms1m,
    "faces_folder": _face_folder,
    "faces_val": _faces_val,
}

# demo set -> the reader that opens it (for summaries); face sets are read by face.py
READERS = {"market1501": "Market1501", "dukemtmc": "DukeMTMC", "msmt17": "MSMT17", "veri776": "VeRi776",
           "vehicleid": "VehicleID", "veriwild": "VeRiWild", "sop": "SOP", "faces_folder": "ImageFolder"}


MANIFEST = ".ppufo_demo.json"  # beside the set folders, so no reader ever lists it


def written_sets(root):
    """{set: seed} of the demo sets completely written into ``root`` (from its manifest)."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _record_written(root, name, seed):
    done = written_sets(root)
    done[name] = seed
    tmp = os.path.join(root, MANIFEST + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(done, f)
    os.replace(tmp, os.path.join(root, MANIFEST))


def write_all(root, seed=0, sets=None):
    """Write the demo sets (default: all of WRITERS) into ``root/<set>``; each finished set is
    recorded in ``root/.ppufo_demo.json``, so an interrupted or older write is detectable.

    Returns {set: {"path", "seconds", "info"}} in writing order (iterating gives the names).
    """
    sets = list(WRITERS) if sets is None else list(sets)
    unknown = sorted(set(sets) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown demo set(s) {unknown}; known: {list(WRITERS)}")
    out = {}
    for name in sets:
        t = time.time()
        path = os.path.join(root, name)
        info = WRITERS[name](path, seed)
        _record_written(root, name, seed)
        out[name] = {"path": path, "seconds": round(time.time() - t, 2), "info": info}
    return out
