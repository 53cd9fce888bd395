"""Backbones by name. PaddleClas models are imported only when one is built."""
from ...utils.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(cfg, **injected):
    return BACKBONES.build(cfg, where="Arch.Backbone", **injected)


from . import paddleclas_backbones, vit, vit_super  # noqa: E402,F401
