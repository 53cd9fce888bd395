"""Person ReID: Market1501, DukeMTMC-reID, MSMT17 (official layouts)."""
import os

from ...utils.logger import get_logger
from .base import DATASETS, DatasetSource, Record
from .layout import existing, read_lines, scan_folder


class _FolderReID(DatasetSource):
    protocol = "reid"
    pattern = r"([-\d]+)_c(\d+)"
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

    def __init__(self, root):
        super().__init__(root)
        self.skipped = {}

    def _split(self, split):
        recs = scan_folder(os.path.join(self.root, self.folders[split]), self.pattern, self.name)
        junk = sum(r.pid == -1 for r in recs)
        if junk:  # pid -1 = junk: never used; counted and reported
            self.skipped[split] = junk
            get_logger().info(f"{self.name} {split}: skipped {junk} junk images (pid -1)")
        return [r for r in recs if r.pid != -1]

    def train(self):
        return [r for r in self._split("train") if r.pid != 0]

    def query(self):
        return self._split("query")

    def gallery(self):
        return self._split("gallery")  # distractors (pid 0) stay: they never match


@DATASETS.register
class Market1501(_FolderReID):
    pattern = r"([-\d]+)_c(\d)s\d+_\d+_\d+"


@DATASETS.register
class DukeMTMC(_FolderReID):
    pattern = r"([-\d]+)_c(\d+)_f\d+"


@DATASETS.register
class MSMT17(DatasetSource):
    """train/ and test/ with list_{train,val,query,gallery}.txt; camera = 3rd '_' field."""
    protocol = "reid"

    def __init__(self, root, add_val_to_train=False):
        super().__init__(root)
        self.add_val = add_val_to_train

    def _list(self, name, folder):
        path = os.path.join(self.root, f"list_{name}.txt")
        out = []
        for rel, pid in read_lines(path, 2, self.name):
            cam = int(os.path.basename(rel).split("_")[2])
            out.append(Record(existing(os.path.join(self.root, folder, rel), path), int(pid), cam - 1))
        return out

    def train(self):
        return self._list("train", "train") + (self._list("val", "train") if self.add_val else [])

    def query(self):
        return self._list("query", "test")

    def gallery(self):
        return self._list("gallery", "test")
