"""Synthetic people, vehicles and products for the ReID and product-retrieval demo sets.

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
Everything is deterministic given the seeds.
"""
import numpy as np

from .common import rng, to_uint8

STYLES = ("person", "vehicle", "product")
SIZES = {"person": (128, 64), "vehicle": (96, 128), "product": (96, 96)}  # (H, W)

_ID_TAG, _VIEW_TAG, _CAM_TAG = 0x1D3, 0x7E5, 0xCA3
_SKIN = np.array([[236, 200, 170], [222, 176, 140], [190, 140, 100], [140, 96, 64], [96, 64, 44]],
                 np.float32)
_HAIR = np.array([[25, 20, 18], [70, 45, 28], [120, 80, 45], [200, 170, 110], [150, 150, 150]],
                 np.float32)


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


def identity_traits(identity_seed, style):
    """Colours, part layout and texture of one identity (what its images share)."""
    r = rng(identity_seed, _ID_TAG, STYLES.index(style))
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
    r = rng(camera, _CAM_TAG, STYLES.index(style))
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
    a = identity_traits(identity_seed, style)
    v = rng(identity_seed, view_seed, _VIEW_TAG)
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
    return to_uint8(img)
