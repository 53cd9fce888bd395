"""Small learnable demo datasets written in each dataset's real on-disk layout.

An identity has stable colours, part layout and texture; a camera/view changes position,
scale, lighting and noise, so cross-camera retrieval is learnable but not trivial.
"""
import os

import numpy as np
from PIL import Image

SIZES = {"person": (128, 64), "vehicle": (96, 128), "product": (96, 96)}


def _identity(identity_seed):
    r = np.random.default_rng([identity_seed, 7])
    return {"colors": r.uniform(0, 255, (3, 3)), "freq": r.uniform(2, 9), "angle": r.uniform(0, np.pi),
            "split": r.uniform(0.35, 0.65), "width": r.uniform(0.5, 0.9), "tex": r.integers(0, 3)}


def render_identity(identity_seed, view_seed, size, style, camera=0):
    """uint8 HxWx3 image of one identity seen from one view."""
    h, w = size
    a = _identity(identity_seed)
    v = np.random.default_rng([identity_seed, view_seed, 11])
    cam = np.random.default_rng([camera, 13])
    scale, dx, dy = v.uniform(0.85, 1.1), v.uniform(-0.08, 0.08), v.uniform(-0.08, 0.08)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xx / w - 0.5 - dx) / scale + 0.5)
    t = ((yy / h - 0.5 - dy) / scale + 0.5)
    ang = a["angle"]
    wave = np.sin((u * np.cos(ang) + t * np.sin(ang)) * a["freq"] * 2 * np.pi)
    tex = [wave > 0, (np.floor(u * a["freq"]) + np.floor(t * a["freq"])) % 2 == 0, wave > 0.5][a["tex"]]
    half = a["width"] / 2
    inside = (np.abs(u - 0.5) < half) & (t > 0.05) & (t < 0.95)
    if style == "person":
        head = (u - 0.5) ** 2 + ((t - 0.12) * 0.5) ** 2 < 0.012
        upper = inside & (t >= 0.22) & (t < a["split"] + 0.1)
        lower = (np.abs(u - 0.5) < half * 0.7) & (t >= a["split"] + 0.1) & (t < 0.95)
        parts = [(head, np.array([220, 180, 150])), (upper & tex, a["colors"][0]),
                 (upper & ~tex, a["colors"][1]), (lower, a["colors"][2])]
    elif style == "vehicle":
        body = (np.abs(u - 0.5) < 0.45) & (t > 0.3) & (t < 0.8)
        roof = (np.abs(u - 0.5) < half * 0.6) & (t > 0.12) & (t <= 0.3)
        wheels = (((u - 0.25) ** 2 + (t - 0.8) ** 2) < 0.008) | (((u - 0.75) ** 2 + (t - 0.8) ** 2) < 0.008)
        parts = [(body & tex, a["colors"][0]), (body & ~tex, a["colors"][1]), (roof, a["colors"][2]),
                 (wheels, np.array([20, 20, 20]))]
    else:
        blob = ((u - 0.5) / half) ** 2 + ((t - 0.5) / 0.4) ** 2 < 1
        parts = [(blob & tex, a["colors"][0]), (blob & ~tex, a["colors"][1]),
                 (blob & (t < a["split"] - 0.2), a["colors"][2])]
    img = np.empty((h, w, 3), np.float32)
    img[:] = cam.uniform(60, 200, 3)  # camera background
    for mask, color in parts:
        img[mask] = color
    gain = cam.uniform(0.7, 1.2) * v.uniform(0.9, 1.1)
    img = img * gain + cam.uniform(-20, 20, 3) + v.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, quality=90)


def _views(seed, ids, imgs_per_id, num_cams, base):
    """(id, camera, n) per image; every identity is seen by at least two cameras."""
    r = np.random.default_rng(seed)
    for pid in ids:
        for n in range(imgs_per_id):
            yield pid, int((n + r.integers(0, num_cams)) % num_cams) if n > 1 else n % num_cams, n + base


def write_market1501(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=6, seed=0):
    """bounding_box_train/, query/ (one per id and camera), bounding_box_test/ incl. junk/distractors."""
    sid = lambda pid: seed * 100003 + pid
    for pid, cam, n in _views(seed, range(1, num_train_ids + 1), imgs_per_id, num_cams, 0):
        _save(f"{root}/bounding_box_train/{pid:04d}_c{cam + 1}s1_{n:06d}_00.jpg",
              render_identity(sid(pid), n, SIZES["person"], "person", cam))
    queried = set()
    for pid, cam, n in _views(seed + 1, range(1001, 1001 + num_test_ids), imgs_per_id, num_cams, 0):
        folder = "query" if (pid, cam) not in queried and n < 2 else "bounding_box_test"
        queried.add((pid, cam))
        _save(f"{root}/{folder}/{pid:04d}_c{cam + 1}s1_{n:06d}_00.jpg",
              render_identity(sid(pid), n, SIZES["person"], "person", cam))
    for n in range(4):  # distractors (0) and junk (-1)
        _save(f"{root}/bounding_box_test/0000_c1s1_{n:06d}_00.jpg",
              render_identity(sid(5000 + n), n, SIZES["person"], "person", 0))
        _save(f"{root}/bounding_box_test/-1_c2s1_{n:06d}_00.jpg",
              render_identity(sid(6000 + n), n, SIZES["person"], "person", 1))


def write_veri776(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, seed=0):
    names = {"train": [], "query": [], "test": []}
    sid = lambda vid: seed * 100003 + 50000 + vid
    for vid, cam, n in _views(seed, range(1, num_train_ids + 1), imgs_per_id, num_cams, 0):
        names["train"].append(f"{vid:04d}_c{cam + 1:03d}_{n:08d}_0.jpg")
        _save(f"{root}/image_train/{names['train'][-1]}", render_identity(sid(vid), n, SIZES["vehicle"], "vehicle", cam))
    for vid, cam, n in _views(seed + 1, range(500, 500 + num_test_ids), imgs_per_id, num_cams, 0):
        split = "query" if n == 0 else "test"
        names[split].append(f"{vid:04d}_c{cam + 1:03d}_{n:08d}_0.jpg")
        _save(f"{root}/image_{split}/{names[split][-1]}", render_identity(sid(vid), n, SIZES["vehicle"], "vehicle", cam))
    for split, files in names.items():
        with open(f"{root}/name_{split}.txt", "w") as f:
            f.write("\n".join(files) + "\n")


def write_sop(root, num_train_classes=30, num_test_classes=20, imgs_per_class=6, seed=0):
    r = np.random.default_rng(seed)
    for split, classes, base in [("train", num_train_classes, 1), ("test", num_test_classes, 10001)]:
        lines, image_id = ["image_id class_id super_class_id path"], 1
        for c in range(base, base + classes):
            sup = int(r.integers(1, 13))
            for n in range(imgs_per_class):
                rel = f"bicycle_final/{c}_{n}.JPG"
                _save(f"{root}/{rel}", render_identity(seed * 100003 + 90000 + c, n, SIZES["product"], "product", n % 3))
                lines.append(f"{image_id} {c} {sup} {rel}")
                image_id += 1
        with open(f"{root}/Ebay_{split}.txt", "w") as f:
            f.write("\n".join(lines) + "\n")


def _faces_val(root, seed):
    from .demo_face import write_verification_bin
    for i, name in enumerate(("lfw", "cfp_fp", "agedb_30")):
        write_verification_bin(os.path.join(root, f"{name}.bin"), num_pairs=200, seed=seed + 31 * i)


def _ms1m(root, seed):
    from .demo_face import write_ms1m_recordio
    write_ms1m_recordio(root, num_ids=40, imgs_per_id=10, seed=seed)


def _face_folder(root, seed):
    from .demo_face import write_face_folder
    write_face_folder(root, num_ids=40, imgs_per_id=10, seed=seed)


WRITERS = {"market1501": lambda r, s: write_market1501(r, seed=s), "veri776": lambda r, s: write_veri776(r, seed=s),
           "sop": lambda r, s: write_sop(r, seed=s), "ms1m": _ms1m, "faces_folder": _face_folder,
           "faces_val": _faces_val}


def write_all(root, seed=0, sets=None):
    """Write the demo sets (default: all) into ``root/<set>``; returns the sets written."""
    sets = list(WRITERS) if sets is None else list(sets)
    unknown = sorted(set(sets) - set(WRITERS))
    if unknown:
        raise ValueError(f"unknown demo set(s) {unknown}; known: {sorted(WRITERS)}")
    for name in sets:
        WRITERS[name](os.path.join(root, name), seed)
    return sets
