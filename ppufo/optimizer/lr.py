"""LR schedules stepped once per iteration (``last_epoch`` counts iterations).

They subclass ``paddle.optimizer.lr.LRScheduler``, so ``state_dict``/``set_state_dict`` (and
the optimizer's own state dict) carry the position for resume. ``max_iters`` is injected by
``build_lr`` from ``Global.max_iters``.
"""
import bisect
import math

from paddle.optimizer.lr import LRScheduler

from ..utils.config import Field, check_args
from ..utils.errors import ConfigError
from ..utils.registry import Registry

LR_SCHEDULERS = Registry("lr")

NONNEG = Field(float, min=0)
# the arguments every schedule shares
WARMUP = {"learning_rate": NONNEG, "warmup_start_lr": NONNEG, "warmup_iters": Field(int, min=0),
          "warmup_ratio": Field((float, type(None)), min=0, below=1),
          "max_iters": Field((int, type(None)), min=1)}


def resolve_warmup(warmup_iters, warmup_ratio, max_iters):
    """Warmup length in iterations from ``warmup_iters`` or ``warmup_ratio * max_iters`` (each
    already checked against WARMUP)."""
    if warmup_ratio is not None:
        if warmup_iters:
            raise ConfigError("warmup_iters/warmup_ratio: give one of them, not both")
        if max_iters is None:
            raise ConfigError("warmup_ratio: needs max_iters")
        return int(round(warmup_ratio * max_iters))
    if max_iters is not None and warmup_iters > max_iters:
        raise ConfigError(f"warmup_iters: {warmup_iters} is more than max_iters {max_iters}")
    return warmup_iters


class WarmupScheduler(LRScheduler):
    """Linear warmup from ``warmup_start_lr`` to ``learning_rate`` over ``warmup`` iterations,
    then ``decayed(it)``."""

    def __init__(self, learning_rate, warmup, warmup_start_lr=0.0):
        self.warmup = warmup
        self.warmup_start_lr = warmup_start_lr
        super().__init__(learning_rate)

    def get_lr(self):
        it = self.last_epoch
        if it < self.warmup:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * it / self.warmup
        return self.decayed(it)

    def decayed(self, it):
        return self.base_lr


@LR_SCHEDULERS.register
@check_args(**dict(WARMUP, max_iters=Field(int, min=1)), eta_min=NONNEG)
class WarmupCosine(WarmupScheduler):
    """Warmup, then cosine from ``learning_rate`` at the end of warmup to ``eta_min`` at
    ``max_iters`` (and ``eta_min`` after). UFO: 0.2 -> 0.004, warmup 10%."""

    def __init__(self, learning_rate, max_iters, warmup_iters=0, warmup_ratio=None,
                 warmup_start_lr=0.0, eta_min=0.0):
        self.max_iters = max_iters
        self.eta_min = eta_min
        super().__init__(learning_rate, resolve_warmup(warmup_iters, warmup_ratio, self.max_iters),
                         warmup_start_lr)

    def decayed(self, it):
        span = self.max_iters - self.warmup
        t = 1.0 if span <= 0 else min(it - self.warmup, span) / span
        return self.eta_min + 0.5 * (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * t))


@LR_SCHEDULERS.register
@check_args(**WARMUP)
class Constant(WarmupScheduler):
    """``learning_rate`` throughout (after an optional warmup)."""

    def __init__(self, learning_rate, max_iters=None, warmup_iters=0, warmup_ratio=None,
                 warmup_start_lr=0.0):
        self.max_iters = max_iters
        super().__init__(learning_rate, resolve_warmup(warmup_iters, warmup_ratio, max_iters),
                         warmup_start_lr)


@LR_SCHEDULERS.register
@check_args(**WARMUP, gamma=NONNEG)
class WarmupPiecewise(WarmupScheduler):
    """Warmup, then ``learning_rate * gamma ** k`` where k = milestones (iterations) passed."""

    def __init__(self, learning_rate, milestones, gamma=0.1, warmup_iters=0, warmup_start_lr=0.0,
                 warmup_ratio=None, max_iters=None):
        if not isinstance(milestones, (list, tuple)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones) \
                or list(milestones) != sorted(milestones):
            raise ConfigError(f"milestones: expected an increasing list of positive iteration numbers, "
                              f"got {milestones!r}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.max_iters = max_iters
        super().__init__(learning_rate, resolve_warmup(warmup_iters, warmup_ratio, max_iters),
                         warmup_start_lr)

    def decayed(self, it):
        return self.base_lr * self.gamma ** bisect.bisect_right(self.milestones, it)


def build_lr(cfg, max_iters, where="Optimizer.lr"):
    """Build a scheduler from ``{name, learning_rate, ...}``; a bare number means Constant."""
    if isinstance(cfg, (int, float)) and not isinstance(cfg, bool):
        cfg = {"name": "Constant", "learning_rate": float(cfg)}
    if isinstance(cfg, dict) and "name" in cfg and cfg["name"] not in LR_SCHEDULERS:
        raise ConfigError(f"{where}.name: unknown lr schedule {cfg['name']!r}; "
                          f"known: {', '.join(LR_SCHEDULERS.names())}")
    try:
        return LR_SCHEDULERS.build(cfg, where=where, max_iters=max_iters)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}.{msg}") from None
