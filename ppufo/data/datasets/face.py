"""Face datasets in the insightface formats: MS1M RecordIO (train) and verification .bin (test)."""
import os
import pickle

import numpy as np

from ...io.image import decode_image
from ...utils.dist import exclusive
from ...utils.errors import DataError
from ...utils.logger import get_logger
from ...utils.safe_load import UNPICKLE_ERRORS, RestrictedUnpickler
from ...utils.textfile import read_text
from ..recordio import RecordIOReader
from .base import DATASETS, DatasetSource, Record, RecordArray


def read_property(path):
    """``num_classes,height,width`` from an insightface ``property`` file."""
    try:
        text = read_text(path).strip()
    except FileNotFoundError:
        raise DataError(f"property file not found: {path} (expected one line "
                        f"'num_classes,112,112')") from None
    try:
        values = [int(v) for v in text.split(",")]
        if len(values) != 3 or min(values) <= 0:
            raise ValueError
    except ValueError:
        raise DataError(f"{path}: content {text[:80]!r}; expected 'num_classes,height,width' "
                        f"with three positive integers") from None
    return tuple(values)


@DATASETS.register
class MS1MRecordIO(DatasetSource):
    """insightface training set (MS1M-V3 = ms1m-retinaface-t1, also emore, glint360k ...).

    ``root`` holds ``train.rec``, ``train.idx`` and ``property``. Layout handled:

    * insightface (face2rec): record 0 is a meta header with flag > 0, no image, and labels
      ``[a, b]``: records 1..a-1 are images, records a..b-1 are identity records whose
      labels ``[start, end)`` give each identity's image-key range;
    * plain image records (record 0 is an image, or there is no key 0): every key is an image.

    An image's identity is its header label (the first of the extra labels when flag > 0,
    e.g. face2rec's ``[label, aligned]``). Records: key = record key (int), pid = label,
    camid = 0.

    Cost of opening: the labels of all image records are read with one vectorised,
    memory-mapped pass over the record headers (MS1M-V3: 5.2 M records, one sequential read
    of the file; no per-record Python loop) and cached in ``<train.idx>.labels.npy``; later
    runs load the cache (milliseconds) while it is newer than train.rec and train.idx.
    """

    def __init__(self, root, rec="train.rec", idx="train.idx", label_cache=True,
                 check_identity_records=True):
        super().__init__(root)
        self.rec_path = os.path.join(root, rec)
        self.idx_path = os.path.join(root, idx)
        self.num_classes, *self.image_size = read_property(os.path.join(root, "property"))
        self.reader = RecordIOReader(self.rec_path, self.idx_path)
        self.identity_keys = None
        self.image_keys, self.identity_ranges = self._layout()
        self.labels = self._labels(label_cache)
        self._validate(check_identity_records)
        self._train = None

    # -- layout -----------------------------------------------------------------------
    def _layout(self):
        r = self.reader
        if 0 not in r:
            return np.sort(r.keys), None
        h0, img0 = r.read(0)
        if h0.flag == 0 or len(img0) > 0:
            return np.sort(r.keys), None  # record 0 is an ordinary image
        where = f"{self.rec_path}: meta header (record 0)"
        if h0.flag < 2:
            raise DataError(f"{where} has {h0.flag} label(s); expected 2 "
                            f"[first identity record, end]")
        a, b = float(h0.label[0]), float(h0.label[1])
        if a != int(a) or b != int(b) or not 1 <= a <= b:
            raise DataError(f"{where} labels {[a, b]}; expected integers 1 <= a <= b")
        a, b = int(a), int(b)
        image_keys = np.arange(1, a, dtype=np.int64)
        id_keys = np.arange(a, b, dtype=np.int64)
        needed = np.concatenate([image_keys, id_keys])
        known = np.isin(needed, r.keys)
        if not known.all():
            k = int(needed[np.argmin(known)])
            kind = "image" if k < a else "identity"
            raise DataError(f"{self.idx_path}: {kind} record {k} is missing; the meta header "
                            f"says images are 1..{a - 1} and identities {a}..{b - 1}")
        self.identity_keys = id_keys
        lab, flags = r.read_labels(id_keys, n=2)  # one small header per identity (93k)
        bad = np.nonzero((flags < 2) | ~np.isfinite(lab).all(1) | (lab != np.round(lab)).any(1))[0]
        if bad.size:
            k = int(id_keys[bad[0]])
            raise DataError(f"{self.rec_path}: identity record {k} at offset {r.offset(k)} "
                            f"has flag {flags[bad[0]]} labels {lab[bad[0]].tolist()}; expected "
                            f"two integer labels [start, end)")
        ranges = lab.astype(np.int64)
        return image_keys, ranges

    # -- labels -----------------------------------------------------------------------
    def _cache_path(self):
        return self.idx_path + ".labels.npy"

    def _labels(self, use_cache):
        if not use_cache:
            return self._read_labels(False)
        # one process per machine reads 5M labels and writes the cache; the others then load it
        with exclusive(self._cache_path() + ".lock", f"indexing labels of {self.rec_path}",
                       get_logger()):
            return self._read_labels(True)

    def _read_labels(self, use_cache):
        keys = self.image_keys
        path = self._cache_path()
        if use_cache and os.path.isfile(path):
            newest = max(os.path.getmtime(self.rec_path), os.path.getmtime(self.idx_path))
            if os.path.getmtime(path) >= newest:
                try:
                    cached = np.load(path, allow_pickle=False)
                    if cached.shape == (2, keys.size) and np.array_equal(cached[0], keys):
                        return cached[1].copy()
                except (OSError, ValueError):
                    pass
                get_logger().info(f"{path}: stale label cache, rebuilding")
        raw = self.reader.read_labels(keys, n=1)[0][:, 0]
        bad = np.nonzero(~np.isfinite(raw) | (raw < 0) | (raw != np.round(raw)))[0]
        if bad.size:
            k = int(keys[bad[0]])
            raise DataError(f"{self.rec_path}: image record {k} at offset "
                            f"{self.reader.offset(k)} has label {raw[bad[0]]!r}; expected a "
                            f"non-negative integer identity")
        labels = raw.astype(np.int64)
        if use_cache:
            try:
                tmp = path + f".tmp{os.getpid()}.npy"
                np.save(tmp, np.stack([keys, labels]))
                os.replace(tmp, path)
            except OSError as e:
                get_logger().warning(f"cannot write label cache {path}: {e}")
        return labels

    def _validate(self, check_identity_records):
        if self.image_keys.size == 0:
            raise DataError(f"{self.rec_path}: holds no image records")
        found = np.unique(self.labels)
        if found.size != self.num_classes:
            raise DataError(f"{self.root}: property says {self.num_classes} identities but the "
                            f"image records of {self.rec_path} hold {found.size}")
        if found[-1] >= self.num_classes:
            raise DataError(f"{self.rec_path}: label {found[-1]} out of range for "
                            f"{self.num_classes} identities (property)")
        if self.identity_ranges is None or not check_identity_records:
            return
        rng = self.identity_ranges
        if rng.shape[0] != self.num_classes:
            raise DataError(f"{self.rec_path}: {rng.shape[0]} identity records but property "
                            f"says {self.num_classes} identities")
        first = int(self.image_keys[0])
        starts, ends = rng[:, 0] - first, rng[:, 1] - first
        ok = (starts >= 0) & (ends > starts) & (ends <= self.image_keys.size)
        ok &= np.concatenate([[starts[0] == 0], starts[1:] == ends[:-1]]) if ok.size else ok
        if ok.size and ends[-1] != self.image_keys.size:
            ok[-1] = False
        if ok.all():
            lo = np.minimum.reduceat(self.labels, starts)
            hi = np.maximum.reduceat(self.labels, starts)
            ok = lo == hi
        if not ok.all():
            j = int(np.argmin(ok))
            key = int(self.identity_keys[j])
            raise DataError(f"{self.rec_path}: identity record {key} range "
                            f"[{rng[j, 0]}, {rng[j, 1]}) does not match the image records "
                            f"(expected contiguous ranges covering images 1..{self.image_keys[-1]}"
                            f" with one label each); pass check_identity_records=False to use "
                            f"the image labels only")

    # -- splits -----------------------------------------------------------------------
    @property
    def num_images(self):
        return int(self.image_keys.size)

    def train(self):
        if self._train is None:
            self._train = RecordArray(self.image_keys, self.labels)
        return self._train

    def read(self, record):
        key = int(record.key)
        _, data = self.reader.read(key)
        return decode_image(data, where=f"{self.rec_path}: record {key} at offset {self.reader.offset(key)}")


# ----------------------------------------------------------------------------- .bin files

def load_verification_bin(path):
    """(list of image bytes, np.bool_ issame) from an insightface .bin, safely."""
    try:
        with open(path, "rb") as fh:
            obj = RestrictedUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"verification file not found: {path}") from None
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: refused or invalid pickle: {e}") from None
    except UNPICKLE_ERRORS as e:
        raise DataError(f"{path}: not a readable verification pickle: "
                        f"{type(e).__name__}: {e}") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DataError(f"{path}: expected a pickled pair (images, issame), got "
                        f"{type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: expected lists (images, issame), got "
                        f"({type(bins).__name__}, {type(issame).__name__})")
    images = []
    for i, b in enumerate(bins):
        if isinstance(b, np.ndarray) and b.dtype == np.uint8:
            b = b.tobytes()
        elif isinstance(b, (bytearray, memoryview)):
            b = bytes(b)
        if not isinstance(b, bytes):
            raise DataError(f"{path}: image {i} is a {type(b).__name__}; expected encoded "
                            f"image bytes")
        images.append(b)
    flags = []
    for i, s in enumerate(issame):
        if isinstance(s, (bool, np.bool_)) or (isinstance(s, (int, np.integer)) and s in (0, 1)):
            flags.append(bool(s))
        else:
            raise DataError(f"{path}: issame[{i}] is {s!r}; expected a bool")
    if len(images) != 2 * len(flags):
        raise DataError(f"{path}: {len(images)} images but {len(flags)} pairs; expected "
                        f"2 images per pair ({2 * len(flags)})")
    if not flags:
        raise DataError(f"{path}: holds no pairs")
    return images, np.asarray(flags, dtype=np.bool_)


@DATASETS.register
class FaceVerificationBin(DatasetSource):
    """insightface verification set ``<root>/<set_name>.bin`` (lfw, cfp_fp, agedb_30 ...).

    protocol "verification": ``pairs()`` -> (records of all images in file order, issame);
    images 2i and 2i+1 form pair i. Record key = image index, pid = -1 (the file has no
    identities), camid = 0. The file is loaded on first use with a restricted unpickler.
    """
    protocol = "verification"

    def __init__(self, root, set_name="lfw"):
        super().__init__(root)
        self.set_name = set_name
        self.path = os.path.join(root, f"{set_name}.bin")
        if not os.path.isfile(self.path):
            found = sorted(f[:-4] for f in os.listdir(root) if f.endswith(".bin"))
            raise DataError(f"FaceVerificationBin: {self.path} not found; .bin sets in "
                            f"{root}: {found}")
        self._images, self._issame = None, None

    @property
    def name(self):
        return f"FaceVerificationBin[{self.set_name}]"

    def _load(self):
        if self._images is None:
            self._images, self._issame = load_verification_bin(self.path)
        return self._images, self._issame

    def __len__(self):
        return len(self._load()[0])

    def pairs(self):
        images, issame = self._load()
        return [Record(i, -1, 0) for i in range(len(images))], issame.copy()

    def test(self):
        return self.pairs()[0]

    def read(self, record):
        images, _ = self._load()
        i = int(record.key)
        if not 0 <= i < len(images):
            raise DataError(f"{self.path}: image index {i} out of range (0..{len(images) - 1})")
        return decode_image(images[i], where=f"{self.path}: image {i}")
