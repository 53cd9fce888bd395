"""What every dataset reader provides, and the image dataset built from readers.

A *source* (registered in DATASETS) is one dataset on disk. It parses its official layout
and returns lists of Record for the splits it has; ``read(record)`` decodes one image.
``ImageDataset`` merges the records of one or more sources (relabelling identities so that
sources never share a label) and applies the transforms.
"""
import os
import random
from collections import namedtuple

import numpy as np

from ...io.image import decode_image
from ...utils.errors import DataError
from ...utils.registry import Registry

DATASETS = Registry("dataset")

# key: the image path (or a reader-specific key, e.g. a RecordIO offset); pid: identity/class id
# as on disk (-1 junk, 0 distractor where the dataset defines them); camid: camera (0 if none).
Record = namedtuple("Record", "key pid camid")


class RecordArray:
    """A split held as three arrays instead of one Record per image: for sources of millions
    of images (MS1M-V3: 5.2M), where a list of namedtuples costs ~150 bytes an image and every
    DataLoader worker that touches it copies the pages its reference counts dirty."""

    def __init__(self, keys, pids, camids=None):
        self.keys, self.pids = np.asarray(keys), np.asarray(pids, np.int64)
        self.camids = np.zeros(len(self.keys), np.int64) if camids is None else np.asarray(camids, np.int64)
        if not len(self.keys) == len(self.pids) == len(self.camids):
            raise ValueError(f"RecordArray: {len(self.keys)} keys, {len(self.pids)} pids, {len(self.camids)} camids")

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        return Record(self.keys[i].item(), int(self.pids[i]), int(self.camids[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def split_ids(records):
    """(pids, camids) int64 arrays of a split: a RecordArray's own, else read off its Records."""
    if isinstance(records, RecordArray):
        return records.pids, records.camids
    return (np.fromiter((r.pid for r in records), np.int64, len(records)),
            np.fromiter((r.camid for r in records), np.int64, len(records)))


class DatasetSource:
    """One dataset on disk. Subclasses set ``protocol`` and implement the splits they have.

    protocol: how its test split is evaluated -- "reid" (query/gallery with cameras),
    "vehicleid" (gallery sampled per identity), "verification" (image pairs),
    "recall_at_k" (every test image queries all others), or None (training only). A source
    whose protocol depends on its config (ImageList, ImageFolder) sets it per instance and
    answers ``protocol_of(entry)`` from the config entry alone.

    How the reid protocol reads the ids: ``has_cameras`` False removes no gallery item for
    sharing the query's camera (every camid is 0 then); ``junk_pid`` (ignored in the gallery)
    is Market1501's -1; ``distractor_pid`` (never matches) is None but in the Market1501-style
    folders, where it is 0: elsewhere 0 is a real id (MSMT17's first test identity), as the
    UFO reference's metric treats it.
    """
    protocol = None
    test_hint = ""  # appended to "<name> has no test protocol": how a test set of this reader is given
    has_cameras = True
    junk_pid, distractor_pid = -1, None

    @classmethod
    def protocol_of(cls, entry):
        """The protocol a config entry ``{name, root, ...}`` gets, without opening the data."""
        return cls.protocol

    def __init__(self, root):
        if not os.path.isdir(root):
            raise DataError(f"{type(self).__name__}: dataset root not found: {root}")
        self.root = root

    @property
    def name(self):
        return type(self).__name__

    def _missing(self, split):
        raise DataError(f"{self.name} ({self.root}) has no '{split}' split")

    def train(self):
        return self._missing("train")

    def query(self):
        return self._missing("query")

    def gallery(self):
        return self._missing("gallery")

    def test(self):
        """All test images, for protocols that split them themselves (vehicleid, recall_at_k)."""
        return self._missing("test")

    def read(self, record):
        """Decode one image (ppufo.io.image). A corrupt or missing file is an error, never skipped."""
        return decode_image(record.key)


def build_source(cfg, data_root, where="dataset"):
    """Build a source from ``{name, root, ...}`` with ``root`` relative to ``data_root``."""
    cfg = dict(cfg)
    if "root" in cfg and not os.path.isabs(cfg["root"]):
        cfg["root"] = os.path.join(data_root, cfg["root"])
    return DATASETS.build(cfg, where=where)


def sample_seed(index):
    """An index is an int or ``(int, seed)``; the seed drives this sample's augmentation."""
    if isinstance(index, (tuple, list)):
        return int(index[0]), int(index[1])
    return int(index), None


class ImageDataset:
    """Records of one or more sources; item -> (CHW float32 image, label, camid).

    relabel=True maps each (source, pid) to a label in 0..num_classes-1, disjoint across
    sources (training). relabel=False keeps on-disk pids (evaluation).
    """

    def __init__(self, parts, transform=None, relabel=True):
        self.transform = transform
        self.sources, self.splits = [], []
        for source, records in parts:
            if not len(records):
                raise DataError(f"{source.name} ({source.root}): split is empty")
            self.sources.append(source)
            self.splits.append(records)
        sizes = [len(r) for r in self.splits]
        self.starts = np.cumsum([0] + sizes)[:-1]
        self.owner = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        ids = [split_ids(r) for r in self.splits]
        if relabel:  # (source, pid) -> 0..n-1 in sorted order, one 1-D unique per source
            labels, offset = [], 0
            for p, _ in ids:
                found, inverse = np.unique(p, return_inverse=True)
                labels.append(inverse.reshape(-1).astype(np.int64) + offset)
                offset += len(found)
            self.labels = np.concatenate(labels)
        else:
            self.labels = np.concatenate([p for p, _ in ids])
        self.cameras = np.concatenate([c for _, c in ids])
        self.num_classes = int(self.labels.max()) + 1 if relabel else len(np.unique(self.labels))

    def __len__(self):
        return len(self.owner)

    def record(self, i):
        """The Record of item ``i`` (a RecordArray source builds it on demand)."""
        j = self.owner[i]
        return self.splits[j][int(i - self.starts[j])]

    def read(self, i):
        """Item ``i`` decoded by its source, before transforms (what tools/check_data.py checks)."""
        return self.sources[self.owner[i]].read(self.record(i))

    def load(self, i, rng=None):
        img = self.read(i)
        if self.transform is not None:
            img = self.transform(img, rng or random.Random())
        return img

    def __getitem__(self, index):
        i, seed = sample_seed(index)
        rng = random.Random(seed) if seed is not None else random.Random()
        return self.load(i, rng), self.labels[i], self.cameras[i]
