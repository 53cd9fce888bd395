"""Optimizer and LR builders: SGD/Momentum (coupled L2) or AdamW, per-group LR multipliers,
per-tensor or global gradient clipping, per-iteration warmup schedules."""
from .lr import LR_SCHEDULERS, Constant, WarmupCosine, WarmupPiecewise, build_lr
from .optimizer import OPTIMIZERS, build_optimizer

__all__ = ["LR_SCHEDULERS", "OPTIMIZERS", "build_lr", "build_optimizer", "WarmupCosine",
           "Constant", "WarmupPiecewise"]
