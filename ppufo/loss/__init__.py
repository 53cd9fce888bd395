"""LOSSES registry and build_loss: a weighted sum of PaddleClas-style loss items.

Loss contract: ``loss(out, label) -> scalar Tensor`` where ``out`` holds "feat" (pre-neck
backbone feature [B, D]), "embedding" (post-neck [B, F]) and "logits" ([B, C], margin applied).
"""
from .combined import CombinedLoss, build_loss  # noqa: F401
from .registry import LOSSES  # noqa: F401
from .softmax import CELoss  # noqa: F401  (registers)
from .triplet import TripletLoss  # noqa: F401  (registers)
