"""``custom_example``: a small "logo" data set in the two layouts a user's own data can have, so
docs/custom_data.md can add a fifth task in YAML alone and run it end to end.

Each identity is a logo: a shape (circle, ring, square, diamond, triangle, hexagon, star, cross),
a mark inside it (none, dot, bar, split, stripes) in a second colour, on a card of a third
colour. Each image jitters position, scale, rotation and card size; its camera (1..num_cams)
sets the scene around the card, the lighting, blur and noise. So a model must learn shape and
colours and ignore pose and camera: learnable, not trivial.

``write_custom_example`` writes, under ``root``:

* ``list/``: ``images/<split>/<id>_c<cam>_<n>.jpg`` and ``train.txt``, ``query.txt``,
  ``gallery.txt`` (``path label camid`` lines, paths relative to ``list/``) and ``test.txt``
  (``path label``: every query and gallery image, for recall_at_k);
* ``folder/``: the same files as ``train/<id>/``, ``query/<id>/``, ``gallery/<id>/``, ``test/<id>/``.

Training ids (1..), test ids (1001..) and gallery-only distractor ids (2001..) are disjoint.
Each test id's first ``queries_per_id`` images are queries, on distinct cameras, and its other
images the gallery, with one on a camera none of its queries uses: every query can match under
the same-camera rule. Deterministic given ``seed`` and the sizes.
"""
import os
import shutil

import numpy as np

from .common import rng, save_image, write_lines
from .identity import _palette
from .reid import _camera_plan

SIZE = 64  # pixels; the quickstart trains at 64x64
SHAPES = ("circle", "ring", "square", "diamond", "triangle", "hexagon", "star", "cross")
MARKS = ("none", "dot", "bar", "split", "stripes")
_TAG = 0x10C0
_SPLIT_TAG = {"train": 0, "test": 1, "distractor": 2}
FIRST_ID = {"train": 1, "test": 1001, "distractor": 2001}  # disjoint label ranges per split


# most cards are one of a few neutral tones, so the card alone rarely tells two logos apart
_NEUTRAL = np.array([[245, 245, 240], [200, 200, 200], [120, 120, 125], [30, 30, 35], [235, 220, 190]], np.float32)


def logo_traits(identity_seed):
    """What every image of one logo shares: shape, mark, colours, size, turn."""
    r = rng(identity_seed, _TAG)
    fg, mark, card = _palette(r, 3)
    if r.uniform() < 0.6:
        card = _NEUTRAL[r.integers(len(_NEUTRAL))]
    return {"shape": int(r.integers(len(SHAPES))), "mark": int(r.integers(len(MARKS))), "fg": fg,
            "mark_colour": mark, "card": card, "radius": r.uniform(0.5, 0.7), "turn": r.uniform(0, np.pi),
            "freq": r.uniform(2, 4)}


def _shape(kind, u, v, radius, turn):
    rad, th = np.hypot(u, v), np.arctan2(v, u) - turn
    if kind in ("diamond", "triangle", "hexagon", "square"):
        n = {"diamond": 4, "triangle": 3, "hexagon": 6, "square": 4}[kind]
        a0 = turn + (np.pi / 4 if kind == "square" else 0)
        faces = [u * np.cos(a0 + 2 * np.pi * k / n) + v * np.sin(a0 + 2 * np.pi * k / n) for k in range(n)]
        return np.max(faces, axis=0) < radius * np.cos(np.pi / n)
    if kind == "ring":
        return (rad < radius) & (rad > 0.6 * radius)
    if kind == "star":
        return rad < radius * (0.55 + 0.45 * np.cos(5 * th))
    if kind == "cross":
        a, b = u * np.cos(turn) + v * np.sin(turn), -u * np.sin(turn) + v * np.cos(turn)
        return ((np.abs(a) < 0.3 * radius) | (np.abs(b) < 0.3 * radius)) & (np.maximum(np.abs(a), np.abs(b)) < radius)
    return rad < radius  # circle


def _mark(kind, u, v, radius, freq):
    if kind == "dot":
        return np.hypot(u, v) < 0.3 * radius
    if kind == "bar":
        return np.abs(v) < 0.15 * radius
    if kind == "split":
        return u > 0
    if kind == "stripes":
        return np.sin(u / radius * freq * np.pi) > 0.3
    return np.zeros_like(u, bool)


def _camera(seed, cam):
    """Scene and lighting of camera ``cam`` (1-based)."""
    r = rng(seed, _TAG, 7, cam)
    return {"bg": r.uniform(40, 215, 3), "grad": r.uniform(-50, 50), "gain": r.uniform(0.8, 1.2),
            "cast": r.uniform(0.85, 1.15, 3), "noise": r.uniform(4, 10), "blur": r.uniform(0.05, 0.3)}


def render_logo(traits, view, camera, size=SIZE):
    """uint8 (size, size, 3) image of a logo (``logo_traits``) under ``view`` (a generator: pose,
    card, clutter) and ``camera`` (``_camera``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (xx + 0.5) / size * 2 - 1, (yy + 0.5) / size * 2 - 1
    img = np.empty((size, size, 3), np.float32)
    img[:] = camera["bg"] + camera["grad"] * y[..., None] / 2
    for _ in range(int(view.integers(0, 3))):  # clutter around the card
        x0, y0, bw, bh = view.uniform(-1, 1, 2).tolist() + view.uniform(0.2, 0.7, 2).tolist()
        img[(x >= x0) & (x < x0 + bw) & (y >= y0) & (y < y0 + bh)] = view.uniform(30, 220, 3)
    scale, rot = view.uniform(0.75, 1.12), np.deg2rad(view.uniform(-25, 25))
    dx, dy = view.uniform(-0.15, 0.15, 2)
    px, py = (x - dx) / scale, (y - dy) / scale
    u, v = np.cos(rot) * px + np.sin(rot) * py, -np.sin(rot) * px + np.cos(rot) * py
    a = traits
    card = np.maximum(np.abs(u), np.abs(v)) < view.uniform(0.82, 0.95)
    logo = _shape(SHAPES[a["shape"]], u, v, a["radius"], a["turn"])
    img[card] = a["card"]
    img[logo] = a["fg"]
    img[logo & _mark(MARKS[a["mark"]], u, v, a["radius"], a["freq"])] = a["mark_colour"]
    if view.uniform() < 0.15:  # a sticker or glare over part of the logo
        x0, y0 = view.uniform(-0.6, 0.3, 2)
        img[(x >= x0) & (x < x0 + 0.35) & (y >= y0) & (y < y0 + 0.35)] = view.uniform(30, 230, 3)
    img = ((img - 128) * view.uniform(0.8, 1.1) + 128) * camera["gain"] * camera["cast"] * view.uniform(0.95, 1.05, 3)
    b = min(0.33, camera["blur"] + view.uniform(0, 0.1))
    img[1:-1] = (1 - 2 * b) * img[1:-1] + b * (img[:-2] + img[2:])
    img[:, 1:-1] = (1 - 2 * b) * img[:, 1:-1] + b * (img[:, :-2] + img[:, 2:])
    img += view.normal(0, camera["noise"], img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _identities(seed, split, num_ids, imgs_per_id, num_cams, min_cams):
    """[(label, [(n, cam 1-based), ...])] of one split: the camera plan of reid._camera_plan."""
    r = rng(seed, _TAG, _SPLIT_TAG[split])
    plan = _camera_plan(r, num_ids, imgs_per_id, num_cams, min_cams) if num_ids else []
    return [(FIRST_ID[split] + i, [(n, c + 1) for n, c in enumerate(cams)]) for i, cams in enumerate(plan)]


def write_custom_example(root, num_train_ids=64, num_test_ids=16, imgs_per_id=6, queries_per_id=2,
                         num_gallery_only_ids=4, num_cams=3, seed=0):
    """``root``/list/ and ``root``/folder/ (module docstring); returns the counts per split."""
    cams = {c: _camera(seed, c) for c in range(1, num_cams + 1)}
    rows = {"train": [], "query": [], "gallery": []}
    jobs = [("train", num_train_ids, 2), ("test", num_test_ids, queries_per_id + 1),
            ("distractor", num_gallery_only_ids, 1)]
    for split, num_ids, min_cams in jobs:
        for label, shots in _identities(seed, split, num_ids, imgs_per_id, num_cams, min_cams):
            traits = logo_traits(seed * 10 ** 6 + label)
            for n, cam in shots:
                part = "train" if split == "train" else ("query" if split == "test" and n < queries_per_id
                                                         else "gallery")
                rel = f"images/{part}/{label:04d}_c{cam}_{n}.jpg"
                save_image(os.path.join(root, "list", rel), render_logo(traits, rng(seed, label, n, _TAG), cams[cam]))
                rows[part].append((rel, label, cam))
    for part, items in rows.items():
        write_lines(os.path.join(root, "list", f"{part}.txt"), [f"{p} {lab} {c}" for p, lab, c in items])
    test = rows["query"] + rows["gallery"]
    write_lines(os.path.join(root, "list", "test.txt"), [f"{p} {lab}" for p, lab, _ in test])
    for part, items in [*rows.items(), ("test", test)]:  # the folder layout: the same image files
        os.makedirs(os.path.join(root, "folder", part), exist_ok=True)
        for p, lab, _ in items:
            dest = os.path.join(root, "folder", part, f"{lab:04d}", os.path.basename(p))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copyfile(os.path.join(root, "list", p), dest)
    return {"images": {**{k: len(v) for k, v in rows.items()}, "test": len(test)}, "train_ids": num_train_ids,
            "test_ids": num_test_ids, "gallery_only_ids": num_gallery_only_ids}


# the test sets of configs/custom_example.yaml, as its logo task names them (read_back)
TEST_SETS = [("logo_list", {"name": "ImageList", "root": "list", "query_list": "query.txt",
                            "gallery_list": "gallery.txt"}),
             ("logo_list_all", {"name": "ImageList", "root": "list", "test_list": "test.txt"}),
             ("logo_folder", {"name": "ImageFolder", "root": "folder", "protocol": "reid"}),
             ("logo_folder_all", {"name": "ImageFolder", "root": "folder", "protocol": "recall_at_k"})]


def read_back(root):
    """[(layout, label, reader, counts)]: the training list and folder and every test set of
    TEST_SETS, opened from ``root`` with ppufo's readers."""
    from ..data.datasets import build_source
    out = []
    for label, entry in [("train", {"name": "ImageList", "root": "list", "list_file": "train.txt"}),
                         ("train", {"name": "ImageFolder", "root": "folder/train"}), *TEST_SETS]:
        src = build_source(entry, root)
        counts = "; ".join(f"{s} {len(recs)} imgs/{len({r.pid for r in recs})} ids"
                           for s in src.splits for recs in [getattr(src, s)()])
        out.append((entry["root"].split("/")[0], label, src.name, counts))
    return out
