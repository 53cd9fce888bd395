from .multitask import ARCHS, MultiTaskModel, build_model  # noqa: F401
from . import supernet  # noqa: E402,F401  (registers SupernetMultiTaskModel)
