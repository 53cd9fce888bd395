"""Embedding neck (BNNeck) and classifiers (CosFace, ArcFace, plain linear).

Classifier weights are [in_dim, num_classes] (Paddle Linear layout). The margin heads return
scale * cos(theta) with the margin applied to the target column only when a label is given
(training); without a label (eval) they return the plain scaled cosine.
"""
import math

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F

from ..utils.config import Field, check_args
from ..utils.dist import process_group
from ..utils.registry import Registry

NECKS = Registry("neck")
HEADS = Registry("head")
DIM = Field(int, min=1)


def _mean_over_ranks(t):
    dist.all_reduce(t)
    return t / process_group()[1]


class FrozenBetaBatchNorm1D(nn.Layer):
    """BatchNorm1D whose beta gets no gradient. Paddle 3.x drops the *gamma* gradient too when
    BatchNorm's bias has stop_gradient (the fused kernel skips both), so normalise without
    affine and apply gamma/beta by hand. Parameter/buffer names match nn.BatchNorm1D.

    Under data parallel training each rank normalises with its own batch statistics (plain
    BN, as the reference's All-in-One neck), but the running statistics are updated from the
    whole global batch (all-reduced), so every rank keeps identical buffers and eval uses
    global statistics. Assumes equal per-rank batch sizes (true for ppufo's samplers)."""

    def __init__(self, num_features, momentum=0.9, epsilon=1e-5):
        super().__init__()
        self.momentum, self.epsilon = momentum, epsilon
        self.weight = self.create_parameter([num_features],
                                            default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([num_features], is_bias=True,
                                          attr=paddle.ParamAttr(trainable=False))
        self.bias.stop_gradient = True
        self.register_buffer("_mean", paddle.zeros([num_features]))
        self.register_buffer("_variance", paddle.ones([num_features]))

    def forward(self, x):
        if not self.training:
            # eval BN is affine; plain arithmetic avoids oneDNN's BatchNorm kernel, which
            # segfaults on 2-D inputs in Paddle Inference 3.3.1 (CPU)
            return (x - self._mean) * (self.weight / paddle.sqrt(self._variance + self.epsilon)) + self.bias
        if process_group()[1] > 1:
            y = self._normalise_and_sync_stats(x)
        else:
            y = F.batch_norm(x, self._mean, self._variance, None, None, training=self.training,
                             momentum=self.momentum, epsilon=self.epsilon)
        return y * self.weight + self.bias

    def statistics(self):
        """(mean, variance) running statistics, as numpy copies (set_statistics puts them back)."""
        return self._mean.numpy().copy(), self._variance.numpy().copy()

    def set_statistics(self, mean, variance):
        """Replace the running statistics (e.g. recomputed for one subnet of a supernet)."""
        for buf, v, name in ((self._mean, mean, "mean"), (self._variance, variance, "variance")):
            v = np.asarray(v, np.float32)
            if v.shape != tuple(buf.shape):
                raise ValueError(f"set_statistics: {name} of shape {v.shape}; expected {tuple(buf.shape)}")
            buf.set_value(v)

    def _normalise_and_sync_stats(self, x):
        mu = x.mean(axis=0)
        var = (x - mu).square().mean(axis=0)  # biased, as Paddle's BN
        y = (x - mu) / paddle.sqrt(var + self.epsilon)
        with paddle.no_grad():
            xd = x.detach().astype("float32")
            stats = _mean_over_ranks(paddle.concat([xd.mean(axis=0), xd.square().mean(axis=0)]))
            g_mean, g_sq = paddle.split(stats, 2)
            g_var = (g_sq - g_mean.square()).clip(min=0.0)
            m = self.momentum
            paddle.assign(m * self._mean + (1 - m) * g_mean, self._mean)
            paddle.assign(m * self._variance + (1 - m) * g_var, self._variance)
        return y


@NECKS.register
@check_args(in_dim=DIM, feature_dim=Field((int, type(None)), min=1))
class BNNeck(nn.Layer):
    """Optional bias-free projection to ``feature_dim`` then BatchNorm with frozen beta
    (gamma 1, beta 0). The reference's SyncBN necks start with gamma 0 / beta 1 (a constructor
    quirk); we use the standard BNNeck initialisation instead."""

    def __init__(self, in_dim, feature_dim=None):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim if feature_dim is None else feature_dim
        self.fc = None
        if self.out_dim != self.in_dim:
            self.fc = nn.Linear(self.in_dim, self.out_dim, bias_attr=False)
        self.bn = FrozenBetaBatchNorm1D(self.out_dim)

    def project(self, x):
        """What the BatchNorm normalises: the projected feature (or ``x`` without projection)."""
        return self.fc(x) if self.fc is not None else x

    def forward(self, x):
        return self.bn(self.project(x))


def _flat_label(label):
    return label.reshape([-1]).astype("int64")


@check_args(in_dim=DIM, num_classes=DIM, scale=Field(float, above=0), margin=Field(float, min=0, below=1.5))
class _CosineHead(nn.Layer):
    """cos(theta) between L2-normalised rows of x and L2-normalised weight columns."""

    def __init__(self, in_dim, num_classes, scale, margin):
        super().__init__()
        self.in_dim, self.num_classes = in_dim, num_classes
        self.scale, self.margin = scale, margin
        # std 0.001 as in the reference; the scale is irrelevant after normalisation
        self.weight = self.create_parameter(
            [self.in_dim, self.num_classes], default_initializer=nn.initializer.Normal(0.0, 0.001))

    def cosine(self, x):
        x = F.normalize(x.astype("float32"), axis=1)
        w = F.normalize(self.weight.astype("float32"), axis=0)
        return paddle.matmul(x, w).clip(-1.0, 1.0)

    def extra_repr(self):
        return (f"in_dim={self.in_dim}, num_classes={self.num_classes}, "
                f"scale={self.scale}, margin={self.margin}")


@HEADS.register
class CosFace(_CosineHead):
    """logits = s * (cos - m * onehot(label))."""

    def __init__(self, in_dim, num_classes, scale=30.0, margin=0.2):
        super().__init__(in_dim, num_classes, scale, margin)

    def forward(self, x, label=None):
        cos = self.cosine(x)
        if label is not None:
            cos = cos - self.margin * F.one_hot(_flat_label(label), self.num_classes)
        return cos * self.scale


@HEADS.register
class ArcFace(_CosineHead):
    """logits = s * cos(theta + m) at the target, s * cos(theta) elsewhere (insightface).
    Where theta + m > pi (cos < th) the target uses cos - mm instead, keeping it monotonic;
    easy_margin applies the margin only where cos > 0."""

    def __init__(self, in_dim, num_classes, scale=64.0, margin=0.5, easy_margin=False):
        super().__init__(in_dim, num_classes, scale, margin)
        self.easy_margin = bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, x, label=None):
        cos = self.cosine(x)
        if label is None:
            return cos * self.scale
        sin = paddle.sqrt((1.0 - cos * cos).clip(min=1e-12))  # finite gradient at |cos| = 1
        phi = cos * self.cos_m - sin * self.sin_m
        if self.easy_margin:
            phi = paddle.where(cos > 0, phi, cos)
        else:
            phi = paddle.where(cos > self.th, phi, cos - self.mm)
        onehot = F.one_hot(_flat_label(label), self.num_classes)
        return (onehot * phi + (1.0 - onehot) * cos) * self.scale


@HEADS.register
@check_args(in_dim=DIM, num_classes=DIM)
class LinearHead(nn.Layer):
    """Plain fully connected classifier (classification tasks); the label is ignored.
    Parameters are named ``weight``/``bias`` so checkpoints read like the margin heads'."""

    def __init__(self, in_dim, num_classes, bias=False):
        super().__init__()
        self.num_classes = num_classes
        self.weight = self.create_parameter([in_dim, self.num_classes],
                                            default_initializer=nn.initializer.XavierUniform())
        self.bias = self.create_parameter([self.num_classes], is_bias=True) if bias else None

    def forward(self, x, label=None):
        return F.linear(x, self.weight, self.bias)
