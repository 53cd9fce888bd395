"""Backbones by name. PaddleClas models are imported only when one is built."""
from . import paddleclas_backbones, vit, vit_super  # noqa: F401  (register)
from .registry import BACKBONES, build_backbone  # noqa: F401
