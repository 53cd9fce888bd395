"""ppufo.io.image.decode_image, the one image decoder, and every reader that goes through it."""
import io
import os
import pickle
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers import bomb_png
from ppufo.data.datasets.base import DATASETS, ImageDataset
from ppufo.data.recordio import IRHeader, RecordIOWriter, pack
from ppufo.io.image import ImageTooLarge, decode_image
from ppufo.utils.errors import DataError


def encode(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def sideways_jpegs():
    """(plain, oriented) JPEG bytes of the same pixels, 40 wide 20 high with the left half white;
    ``oriented`` carries EXIF Orientation 6 (turn 90 degrees clockwise to view)."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    return encode(im, "JPEG", quality=95), encode(im, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied_to_paths_and_bytes(tmp_path):
    plain, oriented = sideways_jpegs()
    path = tmp_path / "sideways.jpg"
    path.write_bytes(oriented)
    stored = np.asarray(decode_image(plain))
    assert stored.shape == (20, 40, 3) and stored[:, :15].mean() > 240  # no EXIF: as stored
    for source in (oriented, str(path), path):
        upright = np.asarray(decode_image(source))
        assert upright.shape == (40, 20, 3)
        np.testing.assert_array_equal(upright, np.rot90(stored, -1))  # the same pixels, turned clockwise
        assert upright[:15].mean() > 240 and upright[25:].mean() < 15  # the white half is on top


def test_output_is_rgb_whatever_the_mode():
    for mode, value, rgb in (("L", 77, (77, 77, 77)), ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
                             ("P", 0, (0, 0, 0)), ("1", 1, (255, 255, 255))):
        im = decode_image(encode(Image.new(mode, (3, 2), value), "PNG"))
        assert (im.mode, im.size, im.getpixel((2, 1))) == ("RGB", (3, 2), rgb)


def test_format_allow_list_names_the_file(tmp_path):
    path = tmp_path / "scan.tif"
    Image.new("RGB", (4, 4)).save(path)
    assert decode_image(str(path)).size == (4, 4)  # no list: any format Pillow reads
    with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(path))}: not a JPEG/PNG image$"):
        decode_image(str(path), formats=("JPEG", "PNG"))
    with pytest.raises(DataError, match=r"cannot decode image <image bytes>: not a JPEG image \(\d+ bytes\)"):
        decode_image(encode(Image.new("RGB", (4, 4)), "PNG"), formats=["JPEG"])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_is_checked_from_the_header():
    red = encode(Image.new("RGB", (40, 30), (200, 10, 10)), "PNG")
    with pytest.raises(ImageTooLarge, match=r"^image upload is 40x30 = 1200 pixels; the limit is 1199$"):
        decode_image(red, max_pixels=1199, where="upload")
    assert decode_image(red, max_pixels=1200).getpixel((39, 29)) == (200, 10, 10)
    assert decode_image(red, max_pixels=None).size == decode_image(red, max_pixels=0).size == (40, 30)
    # a header declaring 13000x13000 with no pixel data: refused before decoding, not "truncated"
    with pytest.raises(ImageTooLarge, match="13000x13000 = 169000000 pixels; the limit is 16777216"):
        decode_image(bomb_png(13000, 13000), max_pixels=4096 * 4096)


@pytest.mark.parametrize("data, reason", [
    (b"", "no image bytes"),
    (b"<html>not found</html>", r"not an image format Pillow reads \(22 bytes\)"),
    ("truncated", r"OSError: image file is truncated .*\(\d+ bytes\)"),
    ("corrupt", r"OSError: broken data stream when reading image file \(164 bytes\)"),
    (b"BM" + bytes(40), r"OSError: Unsupported BMP header type \(0\) \(42 bytes\)"),
])
def test_broken_bytes_name_the_record(data, reason):
    im = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3))
    png, jpeg = encode(im, "PNG"), encode(im, "JPEG")
    data = {"truncated": jpeg[:len(jpeg) // 2],  # header fine, pixels cut: fails in convert(), not open()
            "corrupt": png[:50] + bytes([png[50] ^ 255]) + png[51:]}.get(data, data)  # a flipped IDAT byte
    with pytest.raises(DataError, match=rf"^cannot decode image faces_emore/train\.rec: record 1234: {reason}"):
        decode_image(data, where="faces_emore/train.rec: record 1234")


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=f"^image not found: {re.escape(str(tmp_path / 'gone.jpg'))}$"):
        decode_image(str(tmp_path / "gone.jpg"))
    with pytest.raises(DataError, match=f"^cannot decode image {re.escape(str(tmp_path))}: IsADirectoryError"):
        decode_image(str(tmp_path))
    with pytest.raises(TypeError, match="expected a path or bytes, got ndarray"):
        decode_image(np.zeros((2, 2, 3), np.uint8))


def test_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())  # 67 bytes declaring 20000x20000: Pillow raises in open()
    with pytest.raises(ImageTooLarge, match=f"^image {re.escape(str(path))} has too many pixels: Image size \\(400000000 "
                                            r"pixels\) exceeds limit of 178956970"):
        decode_image(str(path))
    with pytest.raises(ImageTooLarge, match=r"^image lfw\.bin: image 3 \(67 bytes\) has too many pixels"):
        decode_image(bomb_png(), where="lfw.bin: image 3")
    # between MAX_IMAGE_PIXELS and twice that Pillow only warns and would decode: refused here too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    red = encode(Image.new("RGB", (40, 30), (200, 10, 10)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match=r"^image x\.png is 40x30 = 1200 pixels; Pillow's "
                                                r"decompression-bomb limit \(PIL.Image.MAX_IMAGE_PIXELS\) is 1000$"):
            decode_image(red, where="x.png")
    with warnings.catch_warnings():  # python -W error: the warning itself is raised in open()
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLarge, match=r"^image x\.png \(\d+ bytes\) has too many pixels: Image size"):
            decode_image(red, where="x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's check off: only the caller's cap
    assert decode_image(red).size == (40, 30)


# ----------------------------------------------------------------------------- every reader

def market1501(root, image):
    folder = root / "bounding_box_train"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 16), (1, 2, 3)).save(folder / "0001_c1s1_000001_01.jpg", "PNG")  # exact pixels
    (folder / "0002_c2s1_000001_01.jpg").write_bytes(image)
    source = DATASETS.build({"name": "Market1501", "root": str(root)})
    return ImageDataset([(source, source.train())]), re.escape(str(folder / "0002_c2s1_000001_01.jpg"))


def verification_bin(root, image):
    good = encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    with open(root / "lfw.bin", "wb") as fh:
        pickle.dump(([good, image], [True]), fh, protocol=2)
    source = DATASETS.build({"name": "FaceVerificationBin", "root": str(root), "set_name": "lfw"})
    return ImageDataset([(source, source.pairs()[0])], relabel=False), re.escape(f"{root / 'lfw.bin'}: image 1")


def verification_filelist(root, image):
    (root / "lfw").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "lfw" / "0.jpg", "PNG")
    (root / "lfw" / "1.jpg").write_bytes(image)
    (root / "lfw.filelist").write_text("lfw/0.jpg\nlfw/1.jpg\n")
    np.save(root / "lfw_label.npy", np.array([True]))
    source = DATASETS.build({"name": "FaceVerificationFilelist", "root": str(root), "set_name": "lfw"})
    return ImageDataset([(source, source.pairs()[0])], relabel=False), re.escape(str(root / "lfw" / "1.jpg"))


def ms1m_recordio(root, image):
    good = encode(Image.new("RGB", (8, 8), (1, 2, 3)), "PNG")
    with RecordIOWriter(str(root / "train.rec"), str(root / "train.idx")) as w:
        for key, (label, data) in enumerate([(0, good), (1, image)]):
            w.write(key, pack(IRHeader(0, float(label), key, 0), data))
    (root / "property").write_text("2,112,112")
    source = DATASETS.build({"name": "MS1MRecordIO", "root": str(root), "label_cache": False})
    return ImageDataset([(source, source.train())]), re.escape(f"{root / 'train.rec'}: record 1") + r" at offset \d+"


@pytest.mark.parametrize("reader", [market1501, verification_bin, verification_filelist, ms1m_recordio])
def test_every_reader_decodes_through_the_one_decoder(tmp_path, reader):
    """The same bytes in a dataset folder, a .bin pair, a face filelist or a RecordIO record: the
    same pixels (EXIF applied), and a bomb or a broken image is the error naming file or record."""
    _, oriented = sideways_jpegs()
    for name, image, error in (
            ("exif", oriented, None),
            ("bomb", bomb_png(), r"^image {} (\(67 bytes\) )?has too many pixels: Image size \(400000000"),
            ("garbage", b"\x00" * 10, r"^cannot decode image {}: not an image format Pillow reads")):
        root = tmp_path / name
        root.mkdir()
        ds, where = reader(root, image)
        assert np.asarray(ds[0][0]).tolist() == [[[1, 2, 3]] * 8] * (16 if reader is market1501 else 8)
        if error is None:
            np.testing.assert_array_equal(np.asarray(ds[1][0]), np.asarray(decode_image(oriented)))
            assert ds[1][0].size == (20, 40)  # upright: the face .bin and RecordIO applied no EXIF before
            continue
        with pytest.raises(DataError, match=error.format(where)):
            ds[1]
