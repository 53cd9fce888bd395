"""SAMPLERS registry: per-task index samplers and the multi-task batch samplers.

Batch sizes are GLOBAL per step (summed over ranks); every rank builds the same global batch
from the same seed and keeps its own disjoint share.
"""
from .identity import PKSampler, RandomSampler  # noqa: F401  (register)
from .multitask import HeterogeneousBatchSampler, HomogeneousBatchSampler  # noqa: F401  (register)
from .registry import SAMPLERS  # noqa: F401
