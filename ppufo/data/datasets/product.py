"""Stanford Online Products: Ebay_train.txt / Ebay_test.txt (header then id class super path)."""
import os

from ...utils.errors import DataError
from .base import DATASETS, DatasetSource, Record
from .layout import existing, read_lines


@DATASETS.register
class SOP(DatasetSource):
    protocol = "recall_at_k"

    def _list(self, name):
        path = os.path.join(self.root, name)
        rows = read_lines(path, 4, self.name)
        if rows[0] != ["image_id", "class_id", "super_class_id", "path"]:
            raise DataError(f"{path}: expected the header 'image_id class_id super_class_id path'")
        return [Record(existing(os.path.join(self.root, p), path), int(c), 0) for _, c, _, p in rows[1:]]

    def train(self):
        return self._list("Ebay_train.txt")

    def test(self):
        return self._list("Ebay_test.txt")
