"""Weighted sum of the loss items of one task."""
import numbers

import paddle.nn as nn

from ..utils.errors import ConfigError
from ..utils.registry import check_kwargs
from .registry import LOSSES


class CombinedLoss(nn.Layer):
    """items: [(key, weight, loss)]. Returns {key: weight * value, ..., "loss": sum}; the weight
    applies even to a single item."""

    def __init__(self, items):
        super().__init__()
        self.keys = [k for k, _, _ in items]
        self.weights = [w for _, w, _ in items]
        self.losses = nn.LayerList([f for _, _, f in items])

    def forward(self, out, label):
        terms = {}
        for key, w, fn in zip(self.keys, self.weights, self.losses):
            terms[key] = w * fn(out, label)
        total = terms[self.keys[0]]
        for key in self.keys[1:]:
            total = total + terms[key]
        terms["loss"] = total
        return terms


def build_loss(items, where="Loss"):
    """``[{"CELoss": {"weight": 1.0, ...}}, {"TripletLoss": {...}}]`` -> CombinedLoss.
    A repeated name gets a suffix in the output (TripletLoss, TripletLoss_1, ...)."""
    known = ", ".join(LOSSES.names())
    example = "[{CELoss: {weight: 1.0}}, {TripletLoss: {margin: 0.0}}]"
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where}: expected a non-empty list of single-key mappings like "
                          f"{example}, got {items!r}; known losses: {known}")
    built, seen = [], {}
    for i, item in enumerate(items):
        at = f"{where}.{i}"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"{at}: expected a single-key mapping {{LossName: {{...}}}}, "
                              f"got {item!r}; known losses: {known}")
        (name, kwargs), = item.items()
        if name not in LOSSES:
            raise ConfigError(f"{at}: unknown loss '{name}'; known: {known}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{at} ({name}): expected a mapping of arguments, got {kwargs!r}")
        kwargs = dict(kwargs)
        weight = kwargs.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ConfigError(f"{at}.{name}.weight: {weight!r}; expected a number")
        cls = LOSSES.get(name)
        kwargs = check_kwargs(cls, kwargs, f"{at} ({name})", path=f"{at}.{name}")
        try:
            fn = cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{at}: {e}") from None
        seen[name] = seen.get(name, -1) + 1
        key = name if seen[name] == 0 else f"{name}_{seen[name]}"
        built.append((key, float(weight), fn))
    return CombinedLoss(built)
