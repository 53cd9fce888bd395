"""Rank-aware logger: rank 0 logs to stdout and <output_dir>/<name>.log; other ranks stay quiet."""
import logging
import os
import sys

from .dist import rank

_LOGGER = logging.getLogger("ppufo")


def init_logger(log_file=None, level=logging.INFO):
    _LOGGER.handlers.clear()
    _LOGGER.propagate = False
    _LOGGER.setLevel(level if rank() == 0 else logging.ERROR)
    fmt = logging.Formatter("[%(asctime)s] ppufo %(levelname)s: %(message)s", "%Y/%m/%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file and rank() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        _LOGGER.addHandler(h)
    return _LOGGER


def get_logger():
    if not _LOGGER.handlers:
        init_logger()
    return _LOGGER
