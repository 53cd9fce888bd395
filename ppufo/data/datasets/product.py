"""Stanford Online Products (SOP) in the official layout and in the UFO reference's.

Official (``SOP``): ``Stanford_Online_Products/`` Ebay_train.txt and Ebay_test.txt, header
``image_id class_id super_class_id path`` then one line per image
(``1 1 1 bicycle_final/111085122871_0.JPG``), paths relative to the root.
UFO reference (``SOPCsvList``): the same folder with test.txt (and train.txt), CSV lines
``bicycle_final/111085122871_0.JPG,1`` and no header.
Records: key = absolute image path, pid = class_id, camid = 0 (no cameras).
"""
import os

from ...utils.errors import DataError
from .base import DATASETS, Record
from .image_list import FileSource, listed_image, read_rows, to_int

HEADER = ("image_id", "class_id", "super_class_id", "path")


@DATASETS.register
class SOP(FileSource):
    """protocol "recall_at_k": ``test()`` returns every test image; each queries all others."""
    protocol = "recall_at_k"
    splits = ("train", "test")

    def _list(self, name):
        path = os.path.join(self.root, name)
        out = []
        self.super_classes = getattr(self, "super_classes", {})
        for n, (_, cls, sup, rel) in read_rows(path, 4, self.name, header=HEADER, fmt=" ".join(HEADER)):
            pid = to_int(cls, path, n, "class_id")
            self.super_classes[pid] = to_int(sup, path, n, "super_class_id")
            out.append(Record(listed_image(os.path.join(self.root, rel), path, n), pid, 0))
        return out

    def _load_train(self):
        return self._list("Ebay_train.txt")

    def _load_test(self):
        return self._list("Ebay_test.txt")


@DATASETS.register
class SOPCsvList(FileSource):
    """SOP as the UFO reference's test archive holds it: ``test.txt`` (and ``train.txt``) with
    lines ``relative/path.jpg,class_id``. No header: the reference splits every line on ','.
    protocol "recall_at_k", as SOP."""
    protocol = "recall_at_k"
    splits = ("train", "test")

    def _list(self, name):
        path = os.path.join(self.root, name)
        out = []
        for n, (rel, label) in read_rows(path, 2, self.name, sep=",", fmt="relative/path.jpg,label"):
            if not label.lstrip("-").isdigit():
                hint = " (the file has no header line)" if n == 1 else ""
                raise DataError(f"{path}:{n}: label must be an integer class id, got {label!r}{hint}")
            out.append(Record(listed_image(os.path.join(self.root, rel), path, n), int(label), 0))
        return out

    def _load_train(self):
        return self._list("train.txt")

    def _load_test(self):
        return self._list("test.txt")
