"""Every use of a private attribute of Paddle in ppufo, in one place.

One small function per private use, named after what ppufo relies on; CHECKED_AGAINST is the version
each was read against. tests/unit/utils/test_paddle_internals.py asserts each one still exists and
behaves as relied on, so an upgrade fails one named test instead of misbehaving. Gone, public API
instead: the optimizer's ``_param_groups`` (GlobalClipMixin keeps its own parameter list), Momentum's
``_velocity_acc_str`` (``isinstance(opt, paddle.optimizer.Momentum)``) and waitress's ``_map``
(GuardedServer passes its own socket map through waitress's public ``map`` argument).
"""
import contextlib
from collections import Counter

import paddle.nn as nn

CHECKED_AGAINST = {"paddle": "3.3.1"}


def pop_master_weights(optimizer):
    """The fp32 master weights (name -> tensor) ``optimizer`` holds, leaving it none.

    AMP O2 keeps them in ``Optimizer._master_weights``: ``set_state_dict`` fills it from a
    checkpoint's "master_weights" and ``state_dict`` saves it again while it is non-empty. No public
    call empties it (``set_state_dict`` would also replace the accumulators)."""
    masters = getattr(optimizer, "_master_weights", None) or {}
    if masters:
        optimizer._master_weights = {}
    return masters


def batch_norm_types():
    """The classes of Paddle's BatchNorm layers: ``_BatchNormBase`` (BatchNorm1D/2D/3D,
    SyncBatchNorm) and the fluid-style ``BatchNorm``, which does not derive from it."""
    return nn.layer.norm._BatchNormBase, nn.BatchNorm


def bn_uses_global_stats(bn):
    """Whether a BatchNorm layer normalises with its running statistics even in train mode (the
    ``use_global_stats`` argument, kept only as ``_use_global_stats``)."""
    return bool(getattr(bn, "_use_global_stats", None))


def bn_momentum(bn):
    """A BatchNorm layer's momentum (``running = m * running + (1 - m) * batch``), ``_momentum``."""
    return bn._momentum


def set_bn_momentum(bn, momentum):
    """Set the momentum ``forward`` reads from ``_momentum`` on each call."""
    bn._momentum = momentum


@contextlib.contextmanager
def sdpa_selections():
    """Within the block, a Counter of the kernels ``F.scaled_dot_product_attention`` chose, one
    per call: "flash_attn", "mem_efficient" or "math". The choice is ``select_sdp_for_sdpa`` in
    paddle.nn.functional.sdpa, which Paddle documents as not for callers; it is wrapped (looked up
    as a module global on each call), not called, and put back after."""
    import paddle.nn.functional.sdpa as sdpa
    seen, real = Counter(), sdpa.select_sdp_for_sdpa

    def select(param):
        name = real(param)
        seen[name] += 1
        return name
    sdpa.select_sdp_for_sdpa = select
    try:
        yield seen
    finally:
        sdpa.select_sdp_for_sdpa = real
