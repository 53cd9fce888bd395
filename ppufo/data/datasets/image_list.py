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
from collections import Counter

from ...utils.errors import ConfigError, DataError
from ...utils.logger import get_logger
from ...utils.textfile import text_lines
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
    for n, line in text_lines(path):
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
        self.without_match = {}  # split -> queries that cannot find their id (ImageList, ImageFolder)
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


def _some(ids, n=5):
    ids = sorted(ids)
    return str(ids[:n])[:-1] + (", ...]" if len(ids) > n else "]")


def check_query_matches(source, query, gallery, cameras, q_where, g_where):
    """Number of queries with no match in the gallery (an image of their id, under another
    camera if ``cameras``): such a query is left out of rank-k/mAP (the ReID convention), so it
    is counted here, logged and kept in ``source.without_match["query"]``. DataError when no
    query has a match: every score would be undefined."""
    cams = {}
    for r in gallery:
        cams.setdefault(r.pid, set()).add(r.camid)
    lost = [r for r in query if r.pid not in cams or (cameras and not cams[r.pid] - {r.camid})]
    rule = "an image of its id under another camera" if cameras else "an image of its id"
    if len(lost) == len(query):
        raise DataError(f"{source.name}: no query of {q_where} has a match in {g_where} ({rule}); "
                        f"query ids {_some({r.pid for r in query})}, gallery ids {_some(cams)}; "
                        f"the two must share identities")
    source.without_match["query"] = len(lost)
    if lost:
        absent = {r.pid for r in lost if r.pid not in cams}
        get_logger().warning(f"{source.name}: {len(lost)} of {len(query)} queries of {q_where} have no "
                             f"match in {g_where} ({rule}; ids not in the gallery: {_some(absent)}): "
                             f"left out of rank-k/mAP, counted as num_queries_without_match")
    return len(lost)


def check_test_labels(source, records, where):
    """Number of test images whose label no other image has (nothing to retrieve: left out of
    Recall@K and counted, see metric/recall.py), logged and kept in ``source.without_match``;
    DataError when that is every image."""
    counts = Counter(r.pid for r in records)
    single = [r.pid for r in records if counts[r.pid] == 1]
    if len(single) == len(records):
        raise DataError(f"{source.name}: every label of {where} has a single image ({len(records)} "
                        f"images); recall_at_k needs two or more images of a label, one to query "
                        f"and one to find")
    source.without_match["test"] = len(single)
    if single:
        get_logger().warning(f"{source.name}: {len(single)} of {len(records)} images of {where} are "
                             f"the only image of their label ({_some(single)}): left out of "
                             f"Recall@K, counted as num_queries_without_match")
    return len(single)


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

# the test protocols a user's own data can have, and the list keys each reads
LIST_KEYS = {"reid": ("query_list", "gallery_list"), "recall_at_k": ("test_list",)}


def own_protocol(name, protocol, keys):
    """The protocol of an ImageList / ImageFolder config: ``protocol`` if given, else inferred
    from the list keys given (``keys``, None for ImageFolder: no inference, no protocol =
    training). ConfigError naming what is expected on any mismatch."""
    if protocol is not None and protocol not in LIST_KEYS:
        none = "none (training data)" if keys is None else "none (inferred from the lists)"
        raise ConfigError(f"{name}: protocol {protocol!r}; expected reid, recall_at_k or {none}")
    if keys is None:
        return protocol
    kinds = []
    for p, need in LIST_KEYS.items():
        got = [k for k in need if k in keys]
        if got and len(got) < len(need):
            raise ConfigError(f"{name}: {' and '.join(need)} go together (protocol {p}); got only {got[0]}")
        if got:
            kinds.append(p)
    if not kinds and "list_file" not in keys:
        raise ConfigError(f"{name}: no list given; expected list_file (train), query_list + "
                          f"gallery_list (protocol reid) or test_list (protocol recall_at_k)")
    if protocol is None:
        if len(kinds) > 1:
            raise ConfigError(f"{name}: both query_list/gallery_list and test_list given; set "
                              f"protocol: reid or protocol: recall_at_k to say which is the test")
        return kinds[0] if kinds else None
    if protocol not in kinds:
        raise ConfigError(f"{name}: protocol {protocol} reads {' and '.join(LIST_KEYS[protocol])}; "
                          f"not given")
    return protocol


@DATASETS.register
class ImageList(FileSource):
    """PaddleClas-style lists: lines ``relative/path label [camid]`` (paths relative to root;
    a list path may be absolute). Within one file every line has the camid column or none does.

    ``list_file``: split ``train``. ``query_list`` + ``gallery_list``: splits query/gallery,
    protocol reid (with camids in both lists, the Market1501 rule removes gallery images of the
    query's id under its camera; without, nothing is removed). ``test_list``: split test,
    protocol recall_at_k (every image queries all others). ``protocol`` is inferred from the
    lists unless given. Labels are plain ids: no junk or distractor id; a gallery-only id is a
    distractor, a query whose id is not in the gallery is counted and logged.
    ``delimiter=" "`` (default) splits on any run of whitespace; another string splits on
    exactly it (e.g. "," or "\\t").
    """
    junk_pid = distractor_pid = None
    test_hint = "; give query_list + gallery_list (protocol reid) or test_list (protocol recall_at_k)"
    KEYS = {"train": "list_file", "query": "query_list", "gallery": "gallery_list", "test": "test_list"}

    def __init__(self, root, list_file=None, delimiter=" ", query_list=None, gallery_list=None,
                 test_list=None, protocol=None):
        super().__init__(root)
        given = {"train": list_file, "query": query_list, "gallery": gallery_list, "test": test_list}
        self.protocol = own_protocol(self.name, protocol, {self.KEYS[s] for s, f in given.items() if f})
        self.lists = {s: f if os.path.isabs(f) else os.path.join(self.root, f) for s, f in given.items() if f}
        self.splits = tuple(self.lists)
        self.list_file = self.lists.get("train")
        self.delimiter = None if delimiter in (" ", None) else delimiter
        self.camid_column = {}  # split -> whether its list has the camid column
        for path in self.lists.values():
            need_file(path, self.name)

    @classmethod
    def protocol_of(cls, entry):
        return own_protocol(cls.__name__, entry.get("protocol"), {k for k in cls.KEYS.values() if entry.get(k)})

    @property
    def has_cameras(self):
        """Whether query and gallery lists carry camids (reads them; False without protocol reid)."""
        if self.protocol != "reid":
            return False
        self._split("query")
        return self.camid_column["query"]

    def _read(self, split):
        path, out = self.lists[split], []
        rows = read_rows(path, (2, 3), self.name, sep=self.delimiter, fmt="path label [camid]")
        if not rows:
            raise DataError(f"{path}: the list is empty; expected lines path label [camid]")
        first, cams = rows[0][0], len(rows[0][1]) == 3
        for n, parts in rows:
            if (len(parts) == 3) != cams:
                raise DataError(f"{path}:{n}: {len(parts)} fields, but line {first} has {3 if cams else 2}; "
                                f"the camid column must be on every line or on none")
            label = to_int(parts[1], path, n, "label")
            cam = to_int(parts[2], path, n, "camid") if cams else 0
            out.append(Record(listed_image(os.path.join(self.root, parts[0]), path, n), label, cam))
        self.camid_column[split] = cams
        return out

    def _load_train(self):
        return self._read("train")

    def _load_gallery(self):
        return self._read("gallery")

    def _load_query(self):
        query, gallery = self._read("query"), self._split("gallery")
        q, g = self.lists["query"], self.lists["gallery"]
        if self.camid_column["query"] != self.camid_column["gallery"]:
            has, lacks = (q, g) if self.camid_column["query"] else (g, q)
            raise DataError(f"{self.name}: {has} has the camid column but {lacks} has not; give "
                            f"camids in both lists (same-id same-camera gallery images are then "
                            f"removed per query) or in neither")
        check_query_matches(self, query, gallery, self.camid_column["query"], q, g)
        return query

    def _load_test(self):
        out = self._read("test")
        if self.protocol == "recall_at_k":
            check_test_labels(self, out, self.lists["test"])
        return out


def folder_labels(names, where):
    """{identity folder name: label}: numeric names -> that int (so ids agree across splits
    and with the user's own numbering), else one sorted mapping over all the names."""
    if not all(n.isdigit() for n in names):
        return {n: i for i, n in enumerate(sorted(names))}
    seen = {}
    for n in sorted(names):
        if int(n) in seen:  # "7" and "007"
            raise DataError(f"{where}: identity folders {seen[int(n)]!r} and {n!r} are the same number")
        seen[int(n)] = n
    return {n: i for i, n in seen.items()}


@DATASETS.register
class ImageFolder(FileSource):
    """One folder per identity: ``<root>/<identity>/<image>`` (e.g. insightface's extracted
    MS1M folders) is the train split; labels 0..K-1 in sorted folder order (numeric folder
    names sort as numbers).

    ``protocol: reid`` reads ``<root>/<query_dir>/<identity>/...`` and
    ``<root>/<gallery_dir>/<identity>/...`` (query/, gallery/); ``protocol: recall_at_k`` reads
    ``<root>/<test_dir>/<identity>/...`` (test/). There, numeric identity folders keep their
    number as label, other names get one sorted mapping over every split, so the same folder
    name is the same id in query and gallery. No cameras, no junk or distractor id.
    Non-image files and empty identity folders are skipped and counted.
    """
    has_cameras = False
    junk_pid = distractor_pid = None
    test_hint = ("; set protocol: reid (<root>/query/, <root>/gallery/) or protocol: recall_at_k "
                 "(<root>/test/)")
    SPLITS = {None: ("train",), "reid": ("query", "gallery"), "recall_at_k": ("test",)}

    def __init__(self, root, protocol=None, query_dir="query", gallery_dir="gallery", test_dir="test"):
        super().__init__(root)
        self.protocol = own_protocol(self.name, protocol, None)
        self.splits = self.SPLITS[self.protocol]
        self.dirs = {"query": query_dir, "gallery": gallery_dir, "test": test_dir}
        self._labels = None

    @classmethod
    def protocol_of(cls, entry):
        return own_protocol(cls.__name__, entry.get("protocol"), None)

    def _identities(self, split, folder):
        """[(name, [image paths])] of the non-empty identity folders; the rest skipped, counted."""
        names = sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e)))
        out, other, empty = [], 0, 0
        for d in names:
            files = sorted(os.listdir(os.path.join(folder, d)))
            imgs = [os.path.join(folder, d, n) for n in files if is_image(n)
                    and os.path.isfile(os.path.join(folder, d, n))]
            other += len(files) - len(imgs)
            if imgs:
                out.append((d, imgs))
            else:
                empty += 1
        self._skip(split, "non-image files", other, folder)
        self._skip(split, "empty identity folders", empty, folder)
        return out

    def _load_train(self):
        entries = [e for e in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, e))]
        if not entries:
            raise DataError(f"{self.name}: {self.root} has no identity sub-folders; expected <root>/<identity>/<image>")
        if set(entries) <= {"train", *self.dirs.values()}:
            raise DataError(f"{self.name}: {self.root} holds split folders {sorted(entries)}, not identity "
                            f"folders; to train set root: {os.path.join(self.root, 'train')}, to test "
                            f"set protocol: reid (query/, gallery/) or protocol: recall_at_k (test/)")
        numeric = all(e.isdigit() for e in entries)
        order = sorted(self._identities("train", self.root), key=lambda e: int(e[0]) if numeric else e[0])
        self.identities = [d for d, _ in order]  # label -> folder name
        return [Record(path, pid, 0) for pid, (_, imgs) in enumerate(order) for path in imgs]

    def _folder(self, split):
        path = os.path.join(self.root, self.dirs[split])
        if not os.path.isdir(path):
            raise DataError(f"{self.name} protocol {self.protocol}: {split} folder not found: {path}; "
                            f"expected <root>/{self.dirs[split]}/<identity>/<image>")
        return path

    def _records(self, split):
        if self._labels is None:  # one mapping over every split of the protocol
            names = {e for s in self.splits for e in os.listdir(self._folder(s))
                     if os.path.isdir(os.path.join(self._folder(s), e))}
            self._labels = folder_labels(names, f"{self.name} {self.root}")
        folder = self._folder(split)
        out = [Record(p, self._labels[d], 0) for d, imgs in self._identities(split, folder) for p in imgs]
        if not out:
            raise DataError(f"{self.name}: {folder} has no images; expected {folder}/<identity>/<image>")
        return out

    def _load_gallery(self):
        return self._records("gallery")

    def _load_query(self):
        query = self._records("query")
        check_query_matches(self, query, self._split("gallery"), False, self._folder("query"),
                            self._folder("gallery"))
        return query

    def _load_test(self):
        out = self._records("test")
        check_test_labels(self, out, self._folder("test"))
        return out
