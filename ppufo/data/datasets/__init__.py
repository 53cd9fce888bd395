"""Dataset sources (DATASETS registry), one module per on-disk format, and ImageDataset."""
from . import base, face, face_filelist, image_list, person, product, vehicle  # noqa: F401
from .base import DATASETS, DatasetSource, ImageDataset, Record, build_source  # noqa: F401
