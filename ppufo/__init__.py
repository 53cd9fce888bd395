"""ppufo: UFO (Unified Feature Optimization) in PaddlePaddle."""
import warnings

# Paddle warns on every import when ccache is absent; it only matters for compiling C++ extensions,
# which ppufo never does (set before anything imports paddle)
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from .utils import cpu_dispatch  # noqa: F401  (before anything imports paddle: it configures MKL)

__version__ = "0.1.0"
