"""Synthetic, learnable faces and writers for the insightface on-disk formats.

``render_face(identity_seed, view_seed)`` draws an aligned 112x112 "face" whose geometry and
colours (skin tone, face oval, eye spacing/size/colour, brows, nose, mouth, hair colour and
style, glasses, beard) depend only on ``identity_seed``, while pose (shift, rotation, scale),
expression, gaze, clothing, background, lighting, blur and noise depend on ``view_seed``.
Images of one identity therefore share what a recogniser should learn, and differ in what
it should ignore.

Identity seeds: training identity j of demo seed s is ``face_identity_seed(s, j)``; held-out
identities (verification .bin) use ``face_identity_seed(s, j, held_out=True)``, a disjoint
range, so test pairs never show a training identity.
"""
import os
import pickle
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..data.datasets.face import load_verification_bin
from ..data.recordio import IRHeader, RecordIOWriter, pack
from .common import encode_jpeg, rng, save_image, to_uint8, write_lines

_ID_TAG, _VIEW_TAG = 0x1D, 0x7E
_SS = 2  # supersampling factor for anti-aliased drawing

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 140, 100],
                  [160, 105, 72], [112, 72, 48], [80, 52, 36]], np.float64)
_HAIR = np.array([[20, 16, 14], [60, 40, 26], [110, 72, 40], [170, 120, 60], [225, 200, 130],
                  [150, 150, 150], [235, 235, 235], [140, 40, 20]], np.float64)
_IRIS = np.array([[60, 40, 20], [100, 70, 30], [50, 100, 160], [70, 120, 80], [40, 40, 40]],
                 np.float64)


def face_identity_seed(seed, index, held_out=False):
    """Identity seed of demo identity ``index`` (< 10**6) for demo ``seed``."""
    if not 0 <= index < 10 ** 6:
        raise ValueError(f"identity index {index} out of range [0, 1e6)")
    return (int(seed) * 2 + int(bool(held_out))) * 10 ** 6 + int(index)


def _mix(palette, t):
    """Interpolate a palette at t in [0, 1]."""
    x = t * (len(palette) - 1)
    i = min(int(x), len(palette) - 2)
    return palette[i] * (1 - (x - i)) + palette[i + 1] * (x - i)


def _identity(seed):
    r = rng(_ID_TAG, seed)
    skin = np.clip(_mix(_SKIN, r.random()) + r.normal(0, 6, 3), 0, 255)
    hair = np.clip(_HAIR[r.integers(len(_HAIR))] + r.normal(0, 10, 3), 0, 255)
    return dict(
        skin=skin,
        hair=hair,
        iris=np.clip(_IRIS[r.integers(len(_IRIS))] + r.normal(0, 12, 3), 0, 255),
        lips=np.clip(skin * np.array([0.85, 0.55, 0.55]) + r.normal(0, 8, 3), 0, 255),
        face_w=r.uniform(0.30, 0.37), face_h=r.uniform(0.39, 0.46), face_y=r.uniform(0.54, 0.58),
        jaw=r.uniform(0.0, 1.0),              # 0 round chin .. 1 square jaw
        eye_dx=r.uniform(0.13, 0.19), eye_y=r.uniform(0.43, 0.49),
        eye_w=r.uniform(0.05, 0.08), eye_h=r.uniform(0.02, 0.036),
        brow_dy=r.uniform(0.045, 0.08), brow_tilt=r.uniform(-0.03, 0.03),
        brow_w=r.uniform(0.012, 0.026),
        nose_len=r.uniform(0.10, 0.17), nose_w=r.uniform(0.03, 0.06),
        mouth_y=r.uniform(0.75, 0.81), mouth_w=r.uniform(0.08, 0.14), lip_h=r.uniform(0.012, 0.03),
        hair_style=int(r.integers(5)), hair_len=r.uniform(0.0, 1.0),
        ear=r.uniform(0.03, 0.05),
        glasses=r.random() < 0.3, glasses_col=np.array(r.choice([20, 60, 140, 200], 3), float),
        glasses_round=r.random() < 0.5,
        beard=r.random() < 0.2, moustache=r.random() < 0.2,
        mole=(r.uniform(-0.2, 0.2), r.uniform(0.55, 0.78)) if r.random() < 0.3 else None,
    )


def _view(seed, identity_seed):
    r = rng(_VIEW_TAG, seed, identity_seed)
    return dict(
        angle=r.normal(0, 5.0), scale=r.uniform(0.93, 1.07), shift=r.normal(0, 2.5, 2),
        smile=r.uniform(-0.3, 1.0), open=max(0.0, r.normal(0, 0.3)),
        gaze=r.normal(0, 0.25, 2), blink=r.random() < 0.07,
        bg=r.uniform(30, 225, 3), bg2=r.uniform(30, 225, 3),
        shirt=r.uniform(20, 230, 3),
        gain=r.uniform(0.75, 1.2), cast=r.normal(1.0, 0.06, 3),
        light_dir=r.uniform(0, 2 * np.pi), light=r.uniform(0.0, 0.35),
        noise=r.uniform(1.5, 7.0), blur=r.uniform(0.3, 1.1) if r.random() < 0.3 else 0.0,
        noise_seed=int(r.integers(1 << 31)),
    )


def _c(col, alpha=255):
    return tuple(min(255, max(0, int(v + 0.5))) for v in col) + (alpha,)


def _draw_face(p, v, n):
    """RGBA layer (n x n, transparent background) with the frontal face of identity p."""
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)

    def box(cx, cy, rx, ry):
        return [n * (cx - rx), n * (cy - ry), n * (cx + rx), n * (cy + ry)]

    cx, cy, fw, fh = 0.5, p["face_y"], p["face_w"], p["face_h"]
    skin, hair = p["skin"], p["hair"]
    shade = skin * 0.82
    # long hair behind the head
    if p["hair_style"] in (3, 4) and p["hair_len"] > 0.3:
        d.rounded_rectangle(box(cx, cy + 0.05 * p["hair_len"], fw * 1.25, fh * (0.95 + 0.25 * p["hair_len"])),
                            radius=int(n * fw), fill=_c(hair * 0.9))
    # shoulders (clothing changes per photo) and neck
    d.ellipse(box(cx, 1.08, 0.48, 0.2), fill=_c(v["shirt"]))
    d.rectangle(box(cx, cy + fh * 0.95, fw * 0.45, fh * 0.35), fill=_c(shade))
    # ears
    for s in (-1, 1):
        d.ellipse(box(cx + s * fw * 0.98, p["eye_y"] + 0.04, p["ear"], p["ear"] * 1.6), fill=_c(shade))
    # face: oval, squared towards the jaw for square-jawed identities
    d.ellipse(box(cx, cy, fw, fh), fill=_c(skin))
    if p["jaw"] > 0.5:
        j = p["jaw"] - 0.5
        d.rounded_rectangle(box(cx, cy + fh * 0.45, fw * (0.75 + 0.35 * j), fh * 0.45),
                            radius=int(n * fw * 0.5), fill=_c(skin))
    # hair on top
    top = cy - fh
    style = p["hair_style"]
    if style != 2:  # 2 = bald
        hy = min(cy - fh * 0.38, p["eye_y"] - p["brow_dy"] - 0.015)  # hairline above the brows
        d.chord(box(cx, hy, fw * 1.06, fh * 0.8), 180, 360, fill=_c(hair))
        if style == 1:  # fringe
            d.ellipse(box(cx - fw * 0.3, top + fh * 0.3, fw * 0.75, fh * 0.16), fill=_c(hair))
        elif style == 4:  # curls
            for t in np.linspace(0.1, np.pi - 0.1, 7):
                d.ellipse(box(cx + np.cos(t) * fw * 0.95, cy - fh * 0.35 - np.sin(t) * fh * 0.62,
                              fw * 0.24, fw * 0.24), fill=_c(hair))
        elif style == 3:  # side parting
            d.polygon([(n * (cx - fw), n * (top + fh * 0.5)), (n * (cx + fw * 0.2), n * top),
                       (n * (cx + fw), n * (top + fh * 0.45))], fill=_c(hair))
    # eyes and brows
    ey, ew, eh = p["eye_y"], p["eye_w"], p["eye_h"]
    for s in (-1, 1):
        ex = cx + s * p["eye_dx"]
        if v["blink"]:
            d.line([(n * (ex - ew), n * ey), (n * (ex + ew), n * ey)], fill=_c(shade * 0.6), width=max(1, n // 70))
        else:
            d.ellipse(box(ex, ey, ew, eh), fill=(245, 245, 240, 255))
            gx, gy = ex + v["gaze"][0] * ew * 0.4, ey + v["gaze"][1] * eh * 0.3
            d.ellipse(box(gx, gy, eh * 0.95, eh * 0.95), fill=_c(p["iris"]))
            d.ellipse(box(gx, gy, eh * 0.4, eh * 0.4), fill=(10, 10, 10, 255))
        by = ey - p["brow_dy"]
        t = p["brow_tilt"] * s
        d.line([(n * (ex - ew * 1.1), n * (by + t)), (n * (ex + ew * 1.1), n * (by - t))],
               fill=_c(hair * 0.8), width=max(1, int(n * p["brow_w"])))
        if p["glasses"]:
            r = ew * 1.45
            g = box(ex, ey, r, r * (0.8 if p["glasses_round"] else 0.65))
            if p["glasses_round"]:
                d.ellipse(g, outline=_c(p["glasses_col"]), width=max(1, n // 60))
            else:
                d.rectangle(g, outline=_c(p["glasses_col"]), width=max(1, n // 60))
    if p["glasses"]:
        gap = p["eye_dx"] - ew * 1.45
        d.line([(n * (cx - gap), n * ey), (n * (cx + gap), n * ey)], fill=_c(p["glasses_col"]),
               width=max(1, n // 60))
    # nose
    ny = ey + 0.02
    d.polygon([(n * cx, n * ny), (n * (cx - p["nose_w"]), n * (ny + p["nose_len"])),
               (n * (cx + p["nose_w"]), n * (ny + p["nose_len"]))], fill=_c(skin * 0.9))
    d.line([(n * (cx - p["nose_w"] * 0.6), n * (ny + p["nose_len"])),
            (n * (cx + p["nose_w"] * 0.6), n * (ny + p["nose_len"]))], fill=_c(shade * 0.7),
           width=max(1, n // 80))
    # beard / moustache
    my, mw = p["mouth_y"], p["mouth_w"]
    if p["beard"]:
        d.chord(box(cx, cy + fh * 0.35, fw * 0.95, fh * 0.65), 0, 180, fill=_c(hair * 0.95))
    if p["moustache"]:
        d.ellipse(box(cx, my - p["lip_h"] * 2.2, mw * 0.9, p["lip_h"] * 0.9), fill=_c(hair * 0.9))
    # mouth: smile bends the lips, open shows a dark gap
    lh = p["lip_h"]
    curve = v["smile"] * lh * 1.2
    opening = v["open"] * lh * 1.5
    d.chord(box(cx, my - curve, mw, lh + abs(curve) + opening), 0, 180, fill=_c(p["lips"]))
    if opening > lh * 0.3:
        d.ellipse(box(cx, my, mw * 0.7, opening * 0.6), fill=(60, 20, 20, 255))
    if p["mole"] is not None:
        mx, my2 = p["mole"]
        d.ellipse(box(cx + mx * fw * 2, my2, 0.008, 0.008), fill=_c(shade * 0.5))
    return layer


def _affine(n, v):
    """Inverse affine coefficients (output -> input) for rotation/scale/shift about the centre."""
    a = np.deg2rad(v["angle"])
    c, s = np.cos(a) / v["scale"], np.sin(a) / v["scale"]
    ox, oy = n / 2 + v["shift"][0] * _SS, n / 2 + v["shift"][1] * _SS
    # input = centre + R(-a)/scale * (output - centre - shift)
    return (c, s, n / 2 - c * ox - s * oy, -s, c, n / 2 + s * ox - c * oy)


def render_face(identity_seed, view_seed, size=112):
    """One synthetic face, HxWx3 uint8 (RGB)."""
    p, v = _identity(identity_seed), _view(view_seed, identity_seed)
    n = size * _SS
    layer = _draw_face(p, v, n)
    layer = layer.transform((n, n), Image.AFFINE, _affine(n, v), resample=Image.BILINEAR)
    # background: two-colour gradient
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    bg = (v["bg"] * (1 - t) + v["bg2"] * t).astype(np.uint8) * np.ones((1, n, 1), np.uint8)
    img = Image.fromarray(bg, "RGB").convert("RGBA")
    img.alpha_composite(layer)
    img = img.convert("RGB").reduce(_SS)
    if v["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(v["blur"]))
    # lighting: gain, colour cast, directional gradient, sensor noise
    x = np.asarray(img, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    light = 1.0 + v["light"] * (xx * np.cos(v["light_dir"]) + yy * np.sin(v["light_dir"])) * 2
    x = x * (v["gain"] * light)[..., None] * v["cast"].astype(np.float32)
    x += rng(v["noise_seed"]).standard_normal(x.shape, np.float32) * v["noise"]
    return to_uint8(x)


# ----------------------------------------------------------------------------- writers

def write_ms1m_recordio(root, num_ids=40, imgs_per_id=10, seed=0):
    """train.rec / train.idx / property in the insightface (face2rec) layout.

    Record 0: meta header, labels [N + 1, N + 1 + num_ids]; records 1..N: JPEG images
    grouped by identity (header flag 0, label = identity, id = key); records N+1..: one
    identity record per identity with labels [first image key, end key).
    """
    t0 = time.time()
    os.makedirs(root, exist_ok=True)
    n_img = num_ids * imgs_per_id
    first_id_key = n_img + 1
    with RecordIOWriter(os.path.join(root, "train.rec"), os.path.join(root, "train.idx")) as w:
        w.write(0, pack(IRHeader(2, [first_id_key, first_id_key + num_ids], 0, 0), b""))
        key = 1
        for j in range(num_ids):
            ids = face_identity_seed(seed, j)
            for k in range(imgs_per_id):
                w.write(key, pack(IRHeader(0, float(j), key, 0), encode_jpeg(render_face(ids, k))))
                key += 1
        for j in range(num_ids):
            start = 1 + j * imgs_per_id
            w.write(first_id_key + j,
                    pack(IRHeader(2, [start, start + imgs_per_id], first_id_key + j, 0), b""))
    write_lines(os.path.join(root, "property"), [f"{num_ids},112,112"])
    return {"root": root, "num_ids": num_ids, "num_images": n_img,
            "seconds": round(time.time() - t0, 2)}


def write_face_folder(root, num_ids=40, imgs_per_id=10, seed=0):
    """insightface-extracted folders ``<root>/<id>/<n>.jpg`` (same identities as the .rec)."""
    t0 = time.time()
    for j in range(num_ids):
        ids = face_identity_seed(seed, j)
        for k in range(imgs_per_id):
            save_image(os.path.join(root, str(j), f"{k}.jpg"), render_face(ids, k))
    return {"root": root, "num_ids": num_ids, "num_images": num_ids * imgs_per_id,
            "seconds": round(time.time() - t0, 2)}


def verification_pairs(num_pairs=200, seed=0):
    """[(identity_seed_a, view_a, identity_seed_b, view_b, issame)] for a demo .bin.

    Half the pairs show one held-out identity twice, half two held-out identities; same and
    different pairs are balanced inside every tenth of the list (the 10 folds).
    """
    r = rng(0xB1, seed, num_pairs)
    n_ids = max(2, num_pairs // 2)
    issame = np.arange(num_pairs) % 2 == 0
    block = max(2, num_pairs // 10)
    for s in range(0, num_pairs, block):
        issame[s:s + block] = r.permutation(issame[s:s + block])
    out = []
    for i, same in enumerate(issame):
        a = int(r.integers(n_ids))
        b = a if same else int((a + 1 + r.integers(n_ids - 1)) % n_ids)
        out.append((face_identity_seed(seed, a, True), 10_000 + 2 * i,
                    face_identity_seed(seed, b, True), 10_001 + 2 * i, bool(same)))
    return out


def write_verification_bin(path, num_pairs=200, seed=0, protocol=2):
    """insightface .bin: pickle of (list of JPEG bytes, list of bool), 2 images per pair."""
    t0 = time.time()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    bins, issame = [], []
    for ia, va, ib, vb, same in verification_pairs(num_pairs, seed):
        bins.append(encode_jpeg(render_face(ia, va)))
        bins.append(encode_jpeg(render_face(ib, vb)))
        issame.append(same)
    with open(path, "wb") as fh:
        pickle.dump((bins, issame), fh, protocol=protocol)
    return {"path": path, "num_pairs": num_pairs, "seconds": round(time.time() - t0, 2)}


def write_verification_filelist(bin_path, folder, set_name):
    """One verification set in the UFO reference's layout, from an insightface .bin: images
    ``<folder>/<set_name>/<i>.jpg`` (the .bin's bytes, unchanged), ``<set_name>.filelist`` (their
    paths relative to ``folder``, pairs on consecutive lines) and ``<set_name>_label.npy``."""
    images, issame = load_verification_bin(bin_path)
    rels = [f"{set_name}/{i:05d}.jpg" for i in range(len(images))]
    os.makedirs(os.path.join(folder, set_name), exist_ok=True)
    for rel, data in zip(rels, images):
        with open(os.path.join(folder, rel), "wb") as fh:
            fh.write(data)
    write_lines(os.path.join(folder, f"{set_name}.filelist"), rels)
    np.save(os.path.join(folder, f"{set_name}_label.npy"), issame.astype(np.bool_))
    return {"images": len(images), "pairs": len(issame), "same": int(issame.sum())}
