"""Batch-hard triplet loss (Hermans et al. 2017), as used by UFO on the pre-neck feature."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..utils.config import Field, check_args
from ..utils.errors import ConfigError
from .registry import LOSSES

FEATURES = ("feat", "embedding")


def euclidean_dist(x):
    """Pairwise L2 distances [B, B]; sqrt clamped so the gradient is finite at distance 0."""
    sq = (x * x).sum(axis=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * paddle.matmul(x, x, transpose_y=True)
    return paddle.sqrt(d2.clip(min=1e-12))


@LOSSES.register
@check_args(margin=Field(float, doc="0 = soft margin", min=0))
class TripletLoss(nn.Layer):
    """Hardest positive (max d over same id, self excluded) vs hardest negative (min d over
    other ids) per anchor. margin 0: mean softplus(d_ap - d_an) (soft margin); margin > 0:
    mean relu(d_ap - d_an + margin). Anchors lacking a positive or a negative are left out;
    if none is left the loss is 0 (still attached to the graph)."""

    def __init__(self, margin=0.0, feature_from="feat", normalize_feature=False):
        super().__init__()
        if feature_from not in FEATURES:
            raise ConfigError(f"TripletLoss: feature_from={feature_from!r}; expected one of {list(FEATURES)}")
        self.margin = float(margin)
        self.feature_from = feature_from
        self.normalize_feature = bool(normalize_feature)

    def forward(self, out, label):
        x = out[self.feature_from].astype("float32")
        if self.normalize_feature:
            x = F.normalize(x, axis=1)
        label = label.reshape([-1])
        n = x.shape[0]
        dist = euclidean_dist(x)
        same = label.unsqueeze(1) == label.unsqueeze(0)
        is_pos = paddle.logical_and(same, paddle.eye(n, dtype="int32") == 0)
        is_neg = ~same
        # fillers are finite so excluded rows never produce inf/nan (even times 0)
        d_ap = paddle.where(is_pos, dist, paddle.full_like(dist, -1.0)).max(axis=1)
        big = dist.detach().max() + 1.0
        d_an = paddle.where(is_neg, dist, paddle.zeros_like(dist) + big).min(axis=1)
        valid = paddle.logical_and(is_pos.any(axis=1), is_neg.any(axis=1)).astype("float32")
        if self.margin > 0:
            per = F.relu(d_ap - d_an + self.margin)
        else:
            per = F.softplus(d_ap - d_an)
        return (per * valid).sum() / valid.sum().clip(min=1.0)
