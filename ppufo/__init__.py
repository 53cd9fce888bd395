"""ppufo: UFO (Unified Feature Optimization) in PaddlePaddle."""
__version__ = "0.1.0"
