"""Helpers shared by the readers: folders of pattern-named images, and list files."""
import os
import re

from ...utils.errors import DataError
from .base import Record

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def need_dir(path, what):
    if not os.path.isdir(path):
        raise DataError(f"{what}: folder not found: {path}")
    return path


def need_file(path, what):
    if not os.path.isfile(path):
        raise DataError(f"{what}: file not found: {path}")
    return path


def parse_name(path, pattern, what):
    """(pid, cam) from a file name matching ``pattern`` with groups (pid, cam)."""
    m = re.match(pattern, os.path.basename(path))
    if not m:
        raise DataError(f"{what}: image name {path} does not match the pattern {pattern}")
    return int(m.group(1)), int(m.group(2))


def scan_folder(folder, pattern, what, cam_base=1):
    """Records of every image in ``folder``; camids made 0-based."""
    need_dir(folder, what)
    out = []
    for name in sorted(os.listdir(folder)):
        if name.lower().endswith(IMG_EXT):
            p = os.path.join(folder, name)
            pid, cam = parse_name(p, pattern, what)
            out.append(Record(p, pid, cam - cam_base))
    return out


def read_lines(path, fields, what, sep=None):
    """Rows of a list file, each with ``fields`` fields (int or a (min, max) range)."""
    need_file(path, what)
    lo, hi = (fields, fields) if isinstance(fields, int) else fields
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(sep)
            if not lo <= len(parts) <= hi:
                raise DataError(f"{path}:{n}: expected {fields} fields, got {line.strip()!r}")
            rows.append(parts)
    return rows


def existing(path, listed_in):
    if not os.path.isfile(path):
        raise DataError(f"{listed_in}: listed image not found: {path}")
    return path
