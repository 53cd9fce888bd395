"""Generic sources: a list file of 'path label [camid]' lines, or one folder per identity."""
import os

from .base import DATASETS, DatasetSource, Record
from .layout import IMG_EXT, existing, read_lines


@DATASETS.register
class ImageList(DatasetSource):
    def __init__(self, root, list_file, delimiter=" "):
        super().__init__(root)
        self.list_file, self.delimiter = os.path.join(root, list_file), delimiter

    def train(self):
        return [Record(existing(os.path.join(self.root, r[0]), self.list_file), int(r[1]),
                       int(r[2]) if len(r) > 2 else 0)
                for r in read_lines(self.list_file, (2, 3), self.name, sep=self.delimiter)]


@DATASETS.register
class ImageFolder(DatasetSource):
    """<root>/<identity>/<image>; identities numbered in sorted folder order."""

    def train(self):
        out = []
        for pid, d in enumerate(sorted(e for e in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, e)))):
            for name in sorted(os.listdir(os.path.join(self.root, d))):
                if name.lower().endswith(IMG_EXT):
                    out.append(Record(os.path.join(self.root, d, name), pid, 0))
        return out
