"""``latest`` and ``best_model`` as pointer files (detectron2's ``last_checkpoint``): a small JSON
file, ``{"checkpoint": "iter_200", "iteration": 200}``, naming a checkpoint of the same folder,
instead of another full copy of it. best_model's pointer also carries ``best`` (the score that
made it best: the iter_N it names was saved before that evaluation).

A pointer is written to a temporary file, fsynced and renamed over the old one, after the files
it names are complete: a reader sees the old pointer or the new one, each naming a whole save.
"""
import json
import os
import re

from .errors import ConfigError

POINTERS = ("latest", "best_model")
_MAX_BYTES = 1 << 16  # a pointer is a few dozen bytes; anything larger is some other file
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
TEMP = re.compile(r"(?:latest|best_model)\.pointer\.tmp(\d+)")


def read_pointer(path, what="checkpoint"):
    """The record of pointer file ``path``, or None when ``path`` is not one (no such file, or a
    file that is not JSON text, e.g. a state dict saved under that name). A JSON file without
    the expected keys is an error naming it."""
    if not os.path.isfile(path) or os.path.getsize(path) > _MAX_BYTES:
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        rec = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what}: {path}: not a readable checkpoint pointer ({e})") from None
    if not (isinstance(rec, dict) and isinstance(rec.get("checkpoint"), str) and _NAME.fullmatch(rec["checkpoint"])
            and type(rec.get("iteration")) is int):
        raise ConfigError(f"{what}: {path}: expected a checkpoint pointer, a JSON object "
                          f'{{"checkpoint": "<name in the same folder, e.g. iter_200>", "iteration": <int>}}')
    return rec


def write_pointer(folder, name, checkpoint, iteration, **extra):
    """Point ``folder``/``name`` at checkpoint ``checkpoint`` (a name in ``folder``) atomically."""
    record = json.dumps(dict({"checkpoint": checkpoint, "iteration": iteration}, **extra)).encode()
    replace_file(os.path.join(folder, name), lambda f: f.write(record),
                 tmp=os.path.join(folder, f"{name}.pointer.tmp{os.getpid()}"))
    fsync_dir(folder)


def replace_file(path, write, tmp=None):
    """``write(binary file)`` into ``tmp`` (default: a hidden name beside ``path``), fsync, rename over
    ``path``: a reader or a crash sees the old file or the new one, never half of one."""
    tmp = tmp or os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def pointed_at(folder):
    """{pointer name: checkpoint name} of the pointers in ``folder`` that can be read."""
    out = {}
    for name in POINTERS:
        try:
            rec = read_pointer(os.path.join(folder, name))
        except ConfigError:
            continue
        if rec is not None:
            out[name] = rec["checkpoint"]
    return out


def fsync_dir(folder):
    """Make the renames in ``folder`` durable. Some network/FUSE mounts cannot fsync a folder;
    the renames still hold there."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
