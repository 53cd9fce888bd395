"""SAMPLERS registry: per-task index samplers and the multi-task batch samplers.

Batch sizes are GLOBAL per step (summed over ranks); every rank builds the same global batch
from the same seed and keeps its own disjoint share.
"""
from ...utils.registry import Registry

SAMPLERS = Registry("sampler")

from .identity import PKSampler, RandomSampler  # noqa: E402,F401
from .multitask import HeterogeneousBatchSampler, HomogeneousBatchSampler  # noqa: E402,F401
