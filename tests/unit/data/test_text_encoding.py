"""A list or label file in another encoding (Latin-1, say) fails naming the file and the line,
in every reader that reads text itself (the shared helper, ppufo/utils/textfile.py)."""
import numpy as np
import pytest
from PIL import Image

from ppufo.data.datasets.face import read_property
from ppufo.data.datasets.face_filelist import FaceVerificationFilelist
from ppufo.utils.errors import DataError


def test_a_latin1_face_filelist_names_the_file_and_line(tmp_path):
    for name in ("a.jpg", "b.jpg", "\u00e9t\u00e9.jpg", "d.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    np.save(tmp_path / "lfw_label.npy", np.array([True, False]))
    flist = tmp_path / "lfw.filelist"
    flist.write_bytes("a.jpg\nb.jpg\n\u00e9t\u00e9.jpg\nd.jpg\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        FaceVerificationFilelist(str(tmp_path)).test()
    assert str(e.value).startswith(f"{flist}:3: not UTF-8 text (byte 0xe9 at byte 1 of the line")
    flist.write_bytes("a.jpg\nb.jpg\n\u00e9t\u00e9.jpg\nd.jpg\n".encode("utf-8"))  # the same list as UTF-8 reads
    records = FaceVerificationFilelist(str(tmp_path)).test()
    assert [r.key.rsplit("/", 1)[-1] for r in records] == ["a.jpg", "b.jpg", "\u00e9t\u00e9.jpg", "d.jpg"]


def test_a_latin1_property_file_names_the_file(tmp_path):
    prop = tmp_path / "property"
    prop.write_bytes(b"85742,112,112 \xb5\n")
    with pytest.raises(DataError, match=f"^{prop}:1: not UTF-8 text"):
        read_property(str(prop))


def test_a_latin1_image_list_names_the_file_and_line(tmp_path):
    # every list read by read_rows (ImageList, MSMT17, VehicleID, VeRi-Wild, SOP) goes through the helper
    from ppufo.data.datasets import DATASETS
    for name in ("a.jpg", "\u00e9.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    lst = tmp_path / "train.txt"
    lst.write_bytes("a.jpg 0\n\u00e9.jpg 1\n".encode("latin-1"))
    src = DATASETS.build({"name": "ImageList", "root": str(tmp_path), "list_file": "train.txt"})
    with pytest.raises(DataError, match=f"^{lst}:2: not UTF-8 text \\(byte 0xe9 at byte 1 of the line"):
        src.train()
    lst.write_bytes("a.jpg 0\n\u00e9.jpg 1\n".encode("utf-8"))
    assert [r.pid for r in src.train()] == [0, 1]
