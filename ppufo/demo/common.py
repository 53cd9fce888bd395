"""Helpers shared by the demo renderers and writers: seeded generators, pixel rounding, and
the JPEG, image and list files every demo layout is made of."""
import io
import os

import numpy as np
from PIL import Image

JPEG_QUALITY = 90


def rng(*words):
    """A generator seeded by all of ``words`` (ints): one stream per combination."""
    return np.random.default_rng([int(w) % (1 << 63) for w in words])


def to_uint8(img):
    """Round float pixels to uint8, clipping to 0..255."""
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def encode_jpeg(arr, quality=JPEG_QUALITY):
    """JPEG bytes of an HxWx3 uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def save_image(path, arr):
    """Write ``arr`` as a JPEG file at ``path``, creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_jpeg(arr))


def write_lines(path, lines, header=None):
    """A text file of one line per item (after an optional header line), creating its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{s}\n" for s in ([header] if header else []) + list(lines)))
