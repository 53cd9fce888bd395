"""The BACKBONES registry (apart from the package __init__, so backbones can import it without a cycle)."""
from ...utils.registry import Registry

BACKBONES = Registry("backbone")


def build_backbone(cfg, **injected):
    return BACKBONES.build(cfg, where="Arch.Backbone", **injected)
