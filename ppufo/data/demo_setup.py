"""Generate the demo data on first use when the config asks for it; never create other roots."""
import os
import time

from ..utils.errors import DataError
from ..utils.logger import get_logger


def ensure_demo_data(config):
    """With Global.generate_demo_data, write every demo set missing from Global.data_root (before
    training, so a stale root fails now rather than at the final evaluation). Returns the sets
    written."""
    g = config["Global"]
    root = g["data_root"]
    if not g["generate_demo_data"]:
        if os.path.isdir(root) and os.listdir(root):
            return []
        raise DataError(f"Global.data_root not found or empty: {root} (point it at your datasets, "
                        f"or run: python tools/make_demo_data.py --root {root})")
    from .demo import MANIFEST, WRITERS, write_all, written_sets
    done = written_sets(root)
    stale = [s for s in WRITERS if s not in done and os.path.exists(os.path.join(root, s))]
    if stale:
        raise DataError(f"{root}: demo set folder(s) {stale} are not listed as complete in {MANIFEST} "
                        f"(interrupted, or written by an older ppufo); delete them and they are "
                        f"regenerated, or run: python tools/make_demo_data.py --root {root} --overwrite")
    missing = [s for s in WRITERS if s not in done]
    if missing:
        log = get_logger()
        log.info(f"generating demo sets {missing} into {root} (Global.generate_demo_data=True) ...")
        t = time.time()
        write_all(root, seed=g["seed"], sets=missing)
        log.info(f"demo data written in {time.time() - t:.1f}s")
    return missing
