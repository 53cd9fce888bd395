"""The manifest of a demo root: which sets are completely written, with which seed and sizes.

``<root>/.ppufo_demo.json`` maps set -> {"seed": int, "sizes": {writer keyword: value}} holding
only the sizes that differ from the writer's defaults. Manifests written before the size knobs
map set -> seed; such an entry reads as that seed with the default sizes.
"""
import json
import os

from ..utils.errors import DataError

MANIFEST = ".ppufo_demo.json"  # beside the set folders, so no reader ever lists it


def entry(seed, sizes=None):
    """A manifest entry: the seed and the non-default sizes a set was written with."""
    return {"seed": int(seed), "sizes": dict(sizes or {})}


def _read_entry(path, name, value):
    if isinstance(value, int) and not isinstance(value, bool):  # before the size knobs: the seed only
        return entry(value)
    if isinstance(value, dict) and isinstance(value.get("seed"), int) and isinstance(value.get("sizes", {}), dict):
        return entry(value["seed"], value.get("sizes"))
    raise DataError(f"{path}: entry {name!r} is {value!r}; expected a seed or "
                     f'{{"seed": <int>, "sizes": {{...}}}} (delete the root and write it again)')


def written_sets(root):
    """{set: {"seed", "sizes"}} of the demo sets completely written into ``root`` (its manifest)."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            done = json.load(f)
    except FileNotFoundError:
        return {}
    return {name: _read_entry(path, name, value) for name, value in done.items()}


def record_written(root, name, seed, sizes=None):
    """Add ``name`` to the manifest (replaced atomically: a reader never sees half a file)."""
    done = written_sets(root)
    done[name] = entry(seed, sizes)
    tmp = os.path.join(root, MANIFEST + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(done, f)
    os.replace(tmp, os.path.join(root, MANIFEST))
