"""The LOSSES registry (apart from the package __init__, so losses can import it without a cycle)."""
from ..utils.registry import Registry

LOSSES = Registry("loss")
