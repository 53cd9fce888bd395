"""LOSSES registry and build_loss: a weighted sum of PaddleClas-style loss items.

Loss contract: ``loss(out, label) -> scalar Tensor`` where ``out`` holds "feat" (pre-neck
backbone feature [B, D]), "embedding" (post-neck [B, F]) and "logits" ([B, C], margin applied).
"""
from ..utils.registry import Registry

LOSSES = Registry("loss")

from . import softmax, triplet  # noqa: E402,F401  (register)
from .combined import CombinedLoss, build_loss  # noqa: E402,F401
from .softmax import CELoss  # noqa: E402,F401
from .triplet import TripletLoss  # noqa: E402,F401
