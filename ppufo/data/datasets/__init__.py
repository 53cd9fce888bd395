from . import face, image_list, person, product, vehicle  # noqa: F401
from .base import DATASETS, DatasetSource, ImageDataset, Record, build_source  # noqa: F401
