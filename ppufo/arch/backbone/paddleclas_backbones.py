"""PaddleClas backbones through our registry (lazy import: paddleclas loads faiss and logs)."""
import os

import paddle
import paddle.nn as nn

from ...utils.errors import ConfigError
from ...utils.safe_load import load_state
from .registry import BACKBONES


class PaddleClasFeatures(nn.Layer):
    """A PaddleClas classifier with its classifier removed: image -> pooled feature [B, C]."""

    def __init__(self, net, out_dim):
        super().__init__()
        self.net = net
        self.out_dim = out_dim

    def forward(self, x):
        return self.net(x).flatten(1)


@BACKBONES.register
def PaddleClasBackbone(model="ResNet50", pretrained=None, img_size=None, **model_kwargs):
    """pretrained: a local .pdparams path (never downloaded)."""
    from paddleclas.ppcls.arch import backbone as pc
    if not hasattr(pc, model):
        names = sorted(n for n in dir(pc) if n[:1].isupper())
        raise ConfigError(f"Arch.Backbone.model={model!r}: not a PaddleClas backbone; e.g. {names[:8]}")
    net = getattr(pc, model)(pretrained=False, **model_kwargs)
    for head in ("fc", "head", "out"):  # drop the classifier: features, not logits
        if isinstance(getattr(net, head, None), nn.Linear):
            setattr(net, head, nn.Identity())
    if pretrained:
        if not os.path.isfile(pretrained):
            raise ConfigError(f"Arch.Backbone.pretrained: {pretrained} not found (local files only)")
        net.set_state_dict(load_state(pretrained, "Arch.Backbone.pretrained"))
    with paddle.no_grad():
        net.eval()
        size = img_size or [64, 64]
        out_dim = int(net(paddle.zeros([1, 3] + list(size))).flatten(1).shape[1])
        net.train()
    return PaddleClasFeatures(net, out_dim)


@BACKBONES.register
def ResNet50(pretrained=None, img_size=None):
    """PaddleClas ResNet50 (BatchNorm), for the heterogeneous-vs-homogeneous batch ablation."""
    return PaddleClasBackbone("ResNet50", pretrained=pretrained, img_size=img_size)
