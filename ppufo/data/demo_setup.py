"""Generate the demo data on first use when the config asks for it; never create other roots."""
import os
import time

from ..utils.errors import DataError
from ..utils.logger import get_logger


def ensure_demo_data(config):
    g = config["Global"]
    root = g["data_root"]
    if os.path.isdir(root) and os.listdir(root):
        return False
    if not g["generate_demo_data"]:
        raise DataError(f"Global.data_root not found or empty: {root} (point it at your datasets, "
                        f"or run: python tools/make_demo_data.py --root {root})")
    from .demo import write_all
    log = get_logger()
    log.info(f"generating demo data into {root} (Global.generate_demo_data=True) ...")
    t = time.time()
    write_all(root, seed=g["seed"])
    log.info(f"demo data written in {time.time() - t:.1f}s")
    return True
