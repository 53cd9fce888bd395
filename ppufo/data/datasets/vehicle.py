"""Vehicle ReID: VeRi-776, VehicleID, VeRi-Wild (official layouts)."""
import os

from ...utils.errors import DataError
from .base import DATASETS, DatasetSource, Record
from .layout import existing, parse_name, read_lines


@DATASETS.register
class VeRi776(DatasetSource):
    protocol = "reid"
    pattern = r"(\d+)_c(\d+)_\d+_\d+"

    def _split(self, folder, listing):
        path = os.path.join(self.root, listing)
        out = []
        for (name,) in read_lines(path, 1, self.name):
            p = existing(os.path.join(self.root, folder, name), path)
            pid, cam = parse_name(p, self.pattern, self.name)
            out.append(Record(p, pid, cam - 1))
        return out

    def train(self):
        return self._split("image_train", "name_train.txt")

    def query(self):
        return self._split("image_query", "name_query.txt")

    def gallery(self):
        return self._split("image_test", "name_test.txt")


@DATASETS.register
class VehicleID(DatasetSource):
    """image/<id>.jpg + train_test_split lists. Test: one gallery image per id (metric side)."""
    protocol = "vehicleid"
    SIZES = (800, 1600, 2400)

    def __init__(self, root, test_size=2400):
        super().__init__(root)
        if test_size not in self.SIZES:
            raise DataError(f"VehicleID.test_size={test_size}: expected one of {self.SIZES}")
        self.test_size = test_size

    def _list(self, name):
        path = os.path.join(self.root, "train_test_split", name)
        return [Record(existing(os.path.join(self.root, "image", f"{img}.jpg"), path), int(vid), int(img))
                for img, vid in read_lines(path, 2, self.name)]

    def train(self):
        return self._list("train_list.txt")

    def test(self):
        return self._list(f"test_list_{self.test_size}.txt")


@DATASETS.register
class VeRiWild(DatasetSource):
    """images/<vid>/<img>.jpg; test_<n>_id.txt (gallery; also test_<n>.txt) and
    test_<n>_id_query.txt (also test_<n>_query.txt); cameras from vehicle_info.txt."""
    protocol = "reid"
    SIZES = (3000, 5000, 10000)

    def __init__(self, root, test_size=10000):
        super().__init__(root)
        if test_size not in self.SIZES:
            raise DataError(f"VeRiWild.test_size={test_size}: expected one of {self.SIZES}")
        self.test_size = test_size
        self._cams = None

    def cams(self):
        if self._cams is None:
            path = os.path.join(self.root, "train_test_split", "vehicle_info.txt")
            self._cams = {row[0]: int(row[1]) for row in read_lines(path, (2, 6), self.name, sep=";")}
        return self._cams

    def _list(self, *names):
        split = os.path.join(self.root, "train_test_split")
        path = next((os.path.join(split, n) for n in names if os.path.isfile(os.path.join(split, n))), None)
        if path is None:
            raise DataError(f"{self.name}: none of {names} found in {split}")
        out = []
        for (key,) in read_lines(path, 1, self.name):
            if key not in self.cams():
                raise DataError(f"{path}: {key} has no entry in vehicle_info.txt")
            out.append(Record(existing(os.path.join(self.root, "images", key + ".jpg"), path),
                              int(key.split("/")[0]), self.cams()[key]))
        return out

    def train(self):
        return self._list("train_list.txt")

    def query(self):
        n = self.test_size
        return self._list(f"test_{n}_id_query.txt", f"test_{n}_query.txt")

    def gallery(self):
        n = self.test_size
        return self._list(f"test_{n}_id.txt", f"test_{n}.txt")
