"""The one image decoder: a file or encoded bytes -> upright RGB PIL image, or a DataError naming it.

Training, evaluation, the face readers (.bin, RecordIO, filelists) and serving all decode here, so
the same bytes give the same pixels wherever they sit.
"""
import io
import os
import struct

from PIL import Image, ImageOps

from ..utils.errors import DataError

ORIENTATION = 0x0112  # EXIF tag

# What Pillow's parsers raise on malformed input. DecompressionBombError (past 2 x MAX_IMAGE_PIXELS)
# is not an OSError; DecompressionBombWarning is raised only when warnings are errors.
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
           ZeroDivisionError, struct.error)
_TOO_LARGE = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class ImageTooLarge(DataError):
    """More pixels than allowed (the caller's cap, or Pillow's MAX_IMAGE_PIXELS bomb limit)."""


def decode_image(source, formats=None, max_pixels=None, where=None):
    """Upright (EXIF orientation applied) RGB PIL image from a path or encoded bytes.

    formats: the Pillow format names accepted (e.g. ("JPEG", "PNG")); None accepts any.
    max_pixels: bound on width x height, checked from the header before any pixel is decoded
    (a 20 KB 1-bit PNG can declare 13000x13000, 0.5 GB as RGB); ImageTooLarge beyond it, and
    beyond Pillow's Image.MAX_IMAGE_PIXELS (where Pillow itself only warns).
    where: names the image in errors ("lfw.bin: image 17"); defaults to the path.
    Every failure is a DataError (ImageTooLarge for too many pixels) naming the image."""
    is_path = isinstance(source, (str, os.PathLike))
    if not is_path and not isinstance(source, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image: expected a path or bytes, got {type(source).__name__}")
    name = where or (os.fspath(source) if is_path else "<image bytes>")
    size = "" if is_path else f" ({len(source)} bytes)"
    if not is_path and not len(source):
        raise DataError(f"cannot decode image {name}: no image bytes")
    try:
        with Image.open(source if is_path else io.BytesIO(source),
                        formats=None if formats is None else tuple(formats)) as im:
            _check_pixels(im, name, max_pixels)
            if im.getexif().get(ORIENTATION, 1) != 1:  # camera photos store pixels sideways
                im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image not found: {name}") from None
    except _TOO_LARGE as e:
        raise ImageTooLarge(f"image {name}{size} has too many pixels: {e}") from None
    except Image.UnidentifiedImageError:
        expected = f"a {'/'.join(formats)} image" if formats else "an image format Pillow reads"
        raise DataError(f"cannot decode image {name}: not {expected}{size}") from None
    except _BROKEN as e:
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {e}{size}") from None


def _check_pixels(im, name, max_pixels):
    """ImageTooLarge past ``max_pixels`` or Pillow's bomb limit, from the header alone. Between
    MAX_IMAGE_PIXELS and twice that Pillow only warns and decodes; no image the model reads is so big."""
    pixels = im.width * im.height
    pillow = "Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)"
    for limit, what in ((max_pixels, "the limit"), (Image.MAX_IMAGE_PIXELS, pillow)):
        if limit and pixels > limit:
            raise ImageTooLarge(f"image {name} is {im.width}x{im.height} = {pixels} pixels; {what} is {limit}")
