"""Generate the demo data before training when the config asks for it; never create other roots."""
import os
import time

from ..utils.dist import exclusive
from ..utils.errors import DataError
from ..utils.logger import get_logger
from . import sets

LOCK = ".ppufo_demo.lock"  # beside the manifest: one process per machine writes, the others wait


def ensure_demo_data(config):
    """With Global.generate_demo_data, write every demo set missing from Global.data_root (before
    training, so a stale root fails now rather than at the final evaluation). Returns the sets
    written by this process: under a multi-process launch the first process writes, the others
    wait for it and then read."""
    g = config["Global"]
    root = g["data_root"]
    if not g["generate_demo_data"]:
        if os.path.isdir(root) and os.listdir(root):
            return []
        raise DataError(f"Global.data_root not found or empty: {root} (point it at your datasets, "
                        f"or run: python tools/make_demo_data.py --root {root})")
    log = get_logger()
    with exclusive(os.path.join(root, LOCK), f"writing demo data into {root}", log):
        return _write_missing(root, g["seed"], log)


def _write_missing(root, seed, log):
    done = sets.written_sets(root)
    stale = [s for s in sets.WRITERS if s not in done and os.path.exists(os.path.join(root, s))]
    if stale:
        raise DataError(f"{root}: demo set folder(s) {stale} are not listed as complete in {sets.MANIFEST} "
                        f"(interrupted, or written by an older ppufo); delete them and they are "
                        f"regenerated, or run: python tools/make_demo_data.py --root {root} --overwrite")
    missing = [s for s in sets.WRITERS if s not in done]
    if missing:
        log.info(f"generating demo sets {missing} into {root} (Global.generate_demo_data=True) ...")
        t = time.time()
        sets.write_all(root, seed=seed, sets=missing)
        log.info(f"demo data written in {time.time() - t:.1f}s")
    return missing
