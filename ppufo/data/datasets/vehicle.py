"""Vehicle ReID in the official layouts: VeRi-776, VehicleID, VeRi-Wild.

Records: key = absolute image path, pid = vehicle id as on disk, camid = camera - 1 for
VeRi-776, the dataset's camera id for VeRi-Wild, the image id for VehicleID (it has no
cameras; a unique value per image, so same-camera filtering removes only the image itself).
"""
import os

from ...utils.errors import DataError
from .base import DATASETS, Record
from .image_list import (FileSource, NamePattern, first_existing, listed_image, need_dir,
                         read_rows, to_int)


@DATASETS.register
class VeRi776(FileSource):
    """``VeRi/``: image_train/, image_query/, image_test/ listed by name_train.txt,
    name_query.txt, name_test.txt; ``0001_c001_00016450_0.jpg`` -> vehicle 1, camera 1."""
    protocol = "reid"
    splits = ("train", "query", "gallery")
    pattern = NamePattern(r"^(\d+)_c(\d+)_(\d+)_(\d+)\.jpg$", "'<vid>_c<cam>_<frame>_<n>.jpg'",
                          "0001_c001_00016450_0.jpg")

    def _list(self, folder, listing):
        path = os.path.join(self.root, listing)
        need_dir(os.path.join(self.root, folder), self.name)
        out = []
        for n, (name,) in read_rows(path, 1, self.name, fmt="image file name"):
            img = os.path.join(self.root, folder, name)
            vid, cam = self.pattern.parse(img, f"{path}:{n}")[:2]
            if cam < 1:
                raise DataError(f"{path}:{n}: camera {cam} in {name}; cameras are numbered from 1")
            out.append(Record(listed_image(img, path, n), vid, cam - 1))
        return out

    def _load_train(self):
        return self._list("image_train", "name_train.txt")

    def _load_query(self):
        return self._list("image_query", "name_query.txt")

    def _load_gallery(self):
        return self._list("image_test", "name_test.txt")


@DATASETS.register
class VehicleID(FileSource):
    """``VehicleID_V1.0/``: image/<image_id>.jpg; train_test_split/train_list.txt and
    test_list_{800,1600,2400}.txt (also 13164 where present), lines ``image_id vehicle_id``.

    ``test()`` returns every image of the chosen test list; the "vehicleid" protocol (metric
    side) draws one gallery image per identity, the rest are queries, over seeded repeats.
    """
    protocol = "vehicleid"
    splits = ("train", "test")
    SIZES = (800, 1600, 2400, 13164)

    def __init__(self, root, test_size=2400):
        super().__init__(root)
        if test_size not in self.SIZES:
            raise DataError(f"VehicleID.test_size={test_size!r}: expected one of {self.SIZES}")
        self.test_size = test_size
        need_dir(os.path.join(self.root, "image"), self.name)

    def _list(self, name):
        path = os.path.join(self.root, "train_test_split", name)
        out = []
        for n, (img, vid) in read_rows(path, 2, self.name, fmt="image_id vehicle_id"):
            image_id = to_int(img, path, n, "image_id")
            out.append(Record(listed_image(os.path.join(self.root, "image", f"{img}.jpg"), path, n),
                              to_int(vid, path, n, "vehicle_id"), image_id))
        return out

    def _load_train(self):
        return self._list("train_list.txt")

    def _load_test(self):
        return self._list(f"test_list_{self.test_size}.txt")


@DATASETS.register
class VeRiWild(FileSource):
    """``VERI-Wild/``: images/<vid>/<img>.jpg and train_test_split/ lists.

    Two releases are accepted, per list (the one found is logged and kept in ``found``):

    * original: train_list.txt, test_<n>.txt (gallery), test_<n>_query.txt, lines ``vid/img``
      (also ``vid/img.jpg``); cameras from vehicle_info.txt
      (``vid/img;camid;time;model;type;color``, in train_test_split/ or the root);
    * re-issued (used by fast-reid): test_<n>_id.txt, test_<n>_id_query.txt and
      train_list_start0.txt, lines ``vid/img.jpg pid camid`` (camera on the line).

    n = test_size in 3000 / 5000 / 10000 (small / medium / large).
    """
    protocol = "reid"
    splits = ("train", "query", "gallery")
    SIZES = (3000, 5000, 10000)
    INFO = ("train_test_split/vehicle_info.txt", "vehicle_info.txt")

    def __init__(self, root, test_size=10000):
        super().__init__(root)
        if test_size not in self.SIZES:
            raise DataError(f"VeRiWild.test_size={test_size!r}: expected one of {self.SIZES}")
        self.test_size = test_size
        self.images = need_dir(os.path.join(self.root, "images"), self.name)
        self.split_dir = need_dir(os.path.join(self.root, "train_test_split"), self.name)
        self._cams = None

    def cameras(self):
        """{'vid/img': camid} from vehicle_info.txt (loaded once)."""
        if self._cams is None:
            path, _ = first_existing(self.root, self.INFO, self.name)
            self._found("vehicle_info", path)
            cams = {}
            for n, parts in read_rows(path, (2, 3, 4, 5, 6), self.name, sep=";",
                                      fmt="vid/img;camid;time;model;type;color"):
                if n == 1 and not parts[1].strip().lstrip("-").isdigit():
                    continue  # a header line ("id/image;Camera ID;...")
                cams[parts[0]] = to_int(parts[1], path, n, "camid")
            self._cams = cams
        return self._cams

    def _list(self, what, names):
        path, _ = first_existing(self.split_dir, names, f"{self.name} {what} list")
        self._found(f"{what} list", path)
        out = []
        for n, parts in read_rows(path, (1, 3), self.name, fmt="'vid/img' or 'vid/img.jpg pid camid'"):
            rel = parts[0]
            vid, sep, img = rel.partition("/")
            if not sep or not vid.isdigit() or not img or "/" in img:
                raise DataError(f"{path}:{n}: expected '<vid>/<img>' (e.g. 00001/000001), got {rel!r}")
            stem = img[:-4] if img.lower().endswith(".jpg") else img
            key = f"{vid}/{stem}"
            file = listed_image(os.path.join(self.images, vid, stem + ".jpg"), path, n)
            if len(parts) == 3:
                pid, cam = to_int(parts[1], path, n, "pid"), to_int(parts[2], path, n, "camid")
            else:
                cams = self.cameras()
                if key not in cams:
                    raise DataError(f"{path}:{n}: {key} has no entry in {self.found['vehicle_info']}")
                pid, cam = int(vid), cams[key]
            out.append(Record(file, pid, cam))
        return out

    def _load_train(self):
        return self._list("train", ("train_list.txt", "train_list_start0.txt"))

    def _load_query(self):
        n = self.test_size
        return self._list("query", (f"test_{n}_query.txt", f"test_{n}_id_query.txt"))

    def _load_gallery(self):
        n = self.test_size
        return self._list("gallery", (f"test_{n}.txt", f"test_{n}_id.txt"))


