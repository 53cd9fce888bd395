"""Face verification sets as image files, in the UFO reference's released layout.

``faces_emore_val/``: ``<set>.filelist`` lists one image path per line, relative to that
folder (the reference keeps only the first whitespace-separated field of a line, and so do
we); lines 2i and 2i+1 form pair i. ``<set>_label.npy`` holds issame, one bool (or 0/1) per
pair. Sets: lfw, cplfw, calfw, cfp_ff, cfp_fp, agedb_30. Scored like FaceVerificationBin.
"""
import os

import numpy as np

from ...utils.errors import DataError
from ...utils.textfile import text_lines
from .base import DATASETS, Record
from .image_list import FileSource, listed_image, need_file


def load_issame(path, num_images, filelist):
    """The 1-D bool issame array of ``path`` (a .npy, read without pickle), one per pair."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as a .npy array (loaded with allow_pickle=False): "
                        f"{e}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise DataError(f"{path}: is an .npz archive; expected one .npy array of issame flags")
    if arr.ndim != 1:
        raise DataError(f"{path}: array of shape {arr.shape}; expected a 1-D array with one "
                        f"issame flag (bool or 0/1) per pair")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iuf":
            raise DataError(f"{path}: dtype {arr.dtype}; expected bool or 0/1 issame flags")
        bad = np.nonzero((arr != 0) & (arr != 1))[0]
        if bad.size:
            raise DataError(f"{path}: record {bad[0]} is {arr[bad[0]].item()!r}; expected an "
                            f"issame flag, bool or 0/1")
    if 2 * len(arr) != num_images:
        raise DataError(f"{path}: {len(arr)} labels, but {filelist} lists {num_images} images "
                        f"({num_images // 2} pairs); expected one label per pair")
    return arr.astype(np.bool_)


@DATASETS.register
class FaceVerificationFilelist(FileSource):
    """``<root>/<set_name>.filelist`` + ``<set_name>_label.npy`` (root: ``faces_emore_val``).

    protocol "verification": ``pairs()`` -> (records of all images in file order, issame),
    as FaceVerificationBin. Record key = image path, pid = -1, camid = 0. Files are parsed on
    first use; every listed image must exist.
    """
    protocol = "verification"
    splits = ("test",)

    def __init__(self, root, set_name="lfw"):
        super().__init__(root)
        self.set_name = set_name
        self.filelist = os.path.join(self.root, f"{set_name}.filelist")
        self.label_file = os.path.join(self.root, f"{set_name}_label.npy")
        if not os.path.isfile(self.filelist):
            found = sorted(f[:-9] for f in os.listdir(self.root) if f.endswith(".filelist"))
            raise DataError(f"FaceVerificationFilelist: {self.filelist} not found; .filelist sets "
                            f"in {self.root}: {found}")
        need_file(self.label_file, self.name)
        self._issame = None

    @property
    def name(self):
        return f"FaceVerificationFilelist[{self.set_name}]"

    def _load_test(self):
        records, lines = [], []
        for n, line in text_lines(self.filelist):
            fields = line.split()
            if fields:
                path = listed_image(os.path.join(self.root, fields[0]), self.filelist, n)
                records.append(Record(path, -1, 0))
                lines.append(n)
        if not records:
            raise DataError(f"{self.filelist}: lists no images")
        if len(records) % 2:
            raise DataError(f"{self.filelist}: {len(records)} images, an odd number; pairs are "
                            f"consecutive lines, so the image on line {lines[-1]} has no partner")
        self._issame = load_issame(self.label_file, len(records), self.filelist)
        return records

    def pairs(self):
        records = self.test()
        return records, self._issame.copy()
