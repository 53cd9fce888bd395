"""ppufo: UFO (Unified Feature Optimization) in PaddlePaddle."""
from .utils import cpu_dispatch  # noqa: F401  (before anything imports paddle: it configures MKL)

__version__ = "0.1.0"
