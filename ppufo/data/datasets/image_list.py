"""Generic sources (a list file, or one folder per identity) and the parsing helpers every
file-based reader shares (person.py, vehicle.py, product.py use them).

Rules shared by all readers here:

* a missing folder or list file, an image name outside the dataset's pattern, a list line
  with the wrong number of fields, or a listed image that does not exist -> DataError naming
  the file (and line) and what was expected;
* records the dataset itself marks as unusable (Market1501 pid -1 "junk", non-image files
  such as ``Thumbs.db`` inside an image folder, empty identity folders) are skipped, counted
  in ``source.skipped[split]`` (reasons in ``source.skip_reasons[split]``) and logged --
  never dropped silently;
* each split is parsed once and cached; callers get a fresh list every time.
"""
import os
import re

from ...utils.errors import DataError
from ...utils.logger import get_logger
from .base import DATASETS, DatasetSource, Record

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ----------------------------------------------------------------------------- helpers

def need_dir(path, what):
    if not os.path.isdir(path):
        raise DataError(f"{what}: folder not found: {path}")
    return path


def need_file(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{what}: file not found: {path}")
    return path


def first_existing(folder, names, what, kind="file"):
    """(path, name) of the first of ``names`` that exists in ``folder``."""
    test = os.path.isfile if kind == "file" else os.path.isdir
    for n in names:
        p = os.path.join(folder, n)
        if test(p):
            return p, n
    raise DataError(f"{what}: none of {list(names)} found in {folder}")


def is_image(name):
    return name.lower().endswith(IMG_EXT)


class NamePattern:
    """A file-name regex with a human description, e.g. ``'<pid>_c<cam>s<seq>_<frame>_<box>.jpg'``.

    ``groups`` names the regex groups returned by ``parse`` as ints.
    """

    def __init__(self, regex, description, example):
        self.regex = re.compile(regex)
        self.description, self.example = description, example

    def parse(self, path, where):
        name = os.path.basename(path)
        m = self.regex.match(name)
        if not m:
            raise DataError(f"{where}: image {path} does not match the pattern {self.description} "
                            f"(e.g. {self.example}; regex {self.regex.pattern})")
        return tuple(int(g) for g in m.groups())


def read_rows(path, fields, what, sep=None, header=None, fmt=""):
    """[(line_number, [field, ...])] of a list file; blank lines are ignored.

    ``fields``: an int, or a tuple of allowed field counts. ``sep=None`` splits on runs of
    whitespace. ``header``: if given, line 1 must equal these fields and is not returned.
    """
    need_file(path, what)
    allowed = (fields,) if isinstance(fields, int) else tuple(fields)
    want = " or ".join(map(str, allowed))
    fmt = f" ({fmt})" if fmt else ""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split() if sep is None else [p.strip() for p in text.split(sep)]
            if header is not None and n == 1:
                if parts != list(header):
                    raise DataError(f"{path}:1: expected the header {' '.join(header)!r}, got {text!r}")
                continue
            if len(parts) not in allowed:
                raise DataError(f"{path}:{n}: expected {want} fields{fmt}, got {len(parts)}: {text!r}")
            rows.append((n, parts))
    return rows


def to_int(value, path, n, what):
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}:{n}: {what} must be an integer, got {value!r}") from None


def listed_image(path, list_file, n):
    """``path`` if it is a file, else DataError naming the list file and line."""
    if not os.path.isfile(path):
        raise DataError(f"{list_file}:{n}: listed image not found: {path}")
    return path


def split_summary(records):
    return {"images": len(records), "ids": len({r.pid for r in records}),
            "cameras": len({r.camid for r in records})}


class FileSource(DatasetSource):
    """DatasetSource with per-split caching, skip accounting and ``summary()``.

    Subclasses list their splits in ``splits`` and implement ``_load_<split>()``.
    """
    splits = ("train",)

    def __init__(self, root):
        super().__init__(root)
        self.root = os.path.abspath(root)
        self.skipped = {}        # split -> number of records skipped (junk, non-images, ...)
        self.skip_reasons = {}   # split -> {reason: count}
        self.found = {}          # which alternative file/folder names were used
        self._cache = {}

    def _get(self, split):
        if split not in self.splits:
            return getattr(super(), split)()  # the base class's "no such split" error
        return self._split(split)

    def train(self):
        return self._get("train")

    def query(self):
        return self._get("query")

    def gallery(self):
        return self._get("gallery")

    def test(self):
        return self._get("test")

    def _split(self, split):
        if split not in self._cache:
            self.skipped.pop(split, None)
            self.skip_reasons.pop(split, None)
            self._cache[split] = getattr(self, f"_load_{split}")()
        return list(self._cache[split])

    def _skip(self, split, reason, count, where=""):
        if not count:
            return
        self.skipped[split] = self.skipped.get(split, 0) + count
        reasons = self.skip_reasons.setdefault(split, {})
        reasons[reason] = reasons.get(reason, 0) + count
        get_logger().info(f"{self.name} {split}: skipped {count} {reason}" + (f" in {where}" if where else ""))

    def _found(self, what, path):
        if self.found.get(what) != path:
            self.found[what] = path
            get_logger().info(f"{self.name}: using {path} for {what}")

    def summary(self):
        """{split: {"images", "ids", "cameras"[, "skipped"]}} for every split of this source."""
        out = {}
        for split in self.splits:
            recs = getattr(self, split)()
            out[split] = split_summary(recs)
            if self.skipped.get(split):
                out[split]["skipped"] = self.skipped[split]
        return out


def scan_named_folder(source, split, folder, pattern, keep):
    """Records of the images in ``folder`` named by ``pattern`` (groups pid, cam; cam 1-based).

    ``keep(pid)`` returns None to keep a record or a reason string to skip it (counted).
    Non-image files (Thumbs.db ...) are skipped and counted.
    """
    need_dir(folder, source.name)
    out, skipped, other = [], {}, 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not is_image(name) or not os.path.isfile(path):
            other += 1
            continue
        pid, cam = pattern.parse(path, f"{source.name} {folder}")[:2]
        if cam < 1:
            raise DataError(f"{source.name}: image {path}: camera {cam}; cameras are numbered from 1")
        reason = keep(pid)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        out.append(Record(path, pid, cam - 1))
    source._skip(split, "non-image files", other, folder)
    for reason, n in skipped.items():
        source._skip(split, reason, n, folder)
    return out


# ----------------------------------------------------------------------------- sources

@DATASETS.register
class ImageList(FileSource):
    """A PaddleClas-style list: lines ``relative/path label [camid]`` (paths relative to root).

    ``delimiter=" "`` (default) splits on any run of whitespace; another string splits on
    exactly it (e.g. "," or "\\t"). One split, ``train``; protocol None.
    """

    def __init__(self, root, list_file, delimiter=" "):
        super().__init__(root)
        self.list_file = list_file if os.path.isabs(list_file) else os.path.join(self.root, list_file)
        self.delimiter = None if delimiter in (" ", None) else delimiter
        need_file(self.list_file, self.name)

    def _load_train(self):
        out = []
        for n, parts in read_rows(self.list_file, (2, 3), self.name, sep=self.delimiter,
                                  fmt="path label [camid]"):
            label = to_int(parts[1], self.list_file, n, "label")
            cam = to_int(parts[2], self.list_file, n, "camid") if len(parts) == 3 else 0
            out.append(Record(listed_image(os.path.join(self.root, parts[0]), self.list_file, n), label, cam))
        return out


@DATASETS.register
class ImageFolder(FileSource):
    """``<root>/<identity>/<image>`` (e.g. insightface's extracted MS1M folders).

    Identities get labels 0..K-1 in sorted folder order (numeric folder names sort as
    numbers). Non-image files and empty identity folders are skipped and counted.
    """

    def _load_train(self):
        entries = [e for e in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, e))]
        if not entries:
            raise DataError(f"{self.name}: {self.root} has no identity sub-folders; expected <root>/<identity>/<image>")
        self.identities = []  # label -> folder name
        numeric = all(e.isdigit() for e in entries)
        entries.sort(key=int if numeric else None)
        out, other, empty, pid = [], 0, 0, 0
        for d in entries:
            folder = os.path.join(self.root, d)
            names = sorted(os.listdir(folder))
            imgs = [n for n in names if is_image(n) and os.path.isfile(os.path.join(folder, n))]
            other += len(names) - len(imgs)
            if not imgs:
                empty += 1
                continue
            out.extend(Record(os.path.join(folder, n), pid, 0) for n in imgs)
            self.identities.append(d)
            pid += 1
        self._skip("train", "non-image files", other, self.root)
        self._skip("train", "empty identity folders", empty, self.root)
        return out

