"""Person ReID in the official layouts: Market1501, DukeMTMC-reID, MSMT17.

Records: key = absolute image path, pid = identity as on disk, camid = camera - 1 (0-based).
"""
import os

from ...utils.errors import DataError
from .base import DATASETS, Record
from .image_list import (FileSource, NamePattern, first_existing, listed_image, need_file,
                         read_rows, scan_named_folder, to_int)


class _FolderReID(FileSource):
    """bounding_box_train/, query/, bounding_box_test/ of pattern-named images.

    pid -1 (junk) is skipped everywhere and counted; pid 0 (distractors) stays in the
    gallery (it never matches a query) and is skipped, counted, in train and query.
    """
    protocol = "reid"
    distractor_pid = 0
    splits = ("train", "query", "gallery")
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    pattern = None

    def _scan(self, split, keep_distractors):
        def keep(pid):
            if pid == -1:
                return "junk images (pid -1)"
            if pid == 0 and not keep_distractors:
                return "distractor images (pid 0)"
            return None
        return scan_named_folder(self, split, os.path.join(self.root, self.folders[split]),
                                 self.pattern, keep)

    def _load_train(self):
        return self._scan("train", False)

    def _load_query(self):
        return self._scan("query", False)

    def _load_gallery(self):
        return self._scan("gallery", True)


@DATASETS.register
class Market1501(_FolderReID):
    """``Market-1501-v15.09.15/``: ``0002_c1s1_000451_03.jpg`` -> pid 2, camera 1 (camid 0)."""
    pattern = NamePattern(r"^(-1|\d+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$",
                          "'<pid>_c<cam>s<seq>_<frame>_<box>.jpg'", "0002_c1s1_000451_03.jpg")


@DATASETS.register
class DukeMTMC(_FolderReID):
    """``DukeMTMC-reID/``: ``0001_c2_f0046182.jpg`` -> pid 1, camera 2 (camid 1)."""
    pattern = NamePattern(r"^(-1|\d+)_c(\d+)_f(\d+)\.jpg$",
                          "'<pid>_c<cam>_f<frame>.jpg'", "0001_c2_f0046182.jpg")


@DATASETS.register
class MSMT17(FileSource):
    """``MSMT17_V1/`` or ``MSMT17_V2/``: image folders ``train/`` + ``test/`` (V1) or
    ``mask_train_v2/`` + ``mask_test_v2/`` (V2), and ``list_{train,val,query,gallery}.txt``
    with lines ``relative/path.jpg pid`` (train/val relative to the train folder, query/gallery
    to the test folder). Camera = third ``_`` field of the file name
    (``0000_000_01_0303morning_0015_0.jpg`` -> camera 1, camid 0).

    ``add_val_to_train``: list_val.txt (held-out images of the training identities) joins
    the training split. ``train_dir`` / ``test_dir`` override the folder names.
    """
    protocol = "reid"
    splits = ("train", "query", "gallery")
    pattern = NamePattern(r"^(\d+)_(\d+)_(\d+)_[^_]+_\d+_\d+\.(?:jpg|jpeg|png)$",
                          "'<pid>_<index>_<cam>_<date+time>_<frame>_<n>.jpg'",
                          "0000_000_01_0303morning_0015_0.jpg")

    def __init__(self, root, add_val_to_train=False, train_dir=None, test_dir=None):
        super().__init__(root)
        self.add_val_to_train = bool(add_val_to_train)
        self.train_dir = self._folder("train", train_dir, ("train", "mask_train_v2"))
        self.test_dir = self._folder("test", test_dir, ("test", "mask_test_v2"))

    def _folder(self, what, given, candidates):
        path, _ = first_existing(self.root, [given] if given else candidates, f"{self.name} {what} images",
                                 kind="dir")
        self._found(f"{what} images", path)
        return path

    def _list(self, name, folder):
        path = need_file(os.path.join(self.root, f"list_{name}.txt"), self.name)
        out = []
        for n, (rel, pid) in read_rows(path, 2, self.name, fmt="relative/path.jpg pid"):
            img = os.path.join(folder, rel)
            _, _, cam = self.pattern.parse(img, f"{path}:{n}")
            if cam < 1:
                raise DataError(f"{path}:{n}: camera {cam} in {rel}; cameras are numbered from 1")
            out.append(Record(listed_image(img, path, n), to_int(pid, path, n, "pid"), cam - 1))
        return out

    def _load_train(self):
        return self._list("train", self.train_dir)

    def _load_val(self):
        return self._list("val", self.train_dir)

    def _load_query(self):
        return self._list("query", self.test_dir)

    def _load_gallery(self):
        return self._list("gallery", self.test_dir)

    def train(self):
        return self._split("train") + (self._split("val") if self.add_val_to_train else [])

    def val(self):
        return self._split("val")


