"""The SAMPLERS registry (apart from the package __init__, so samplers can import it without a cycle)."""
from ...utils.registry import Registry

SAMPLERS = Registry("sampler")
