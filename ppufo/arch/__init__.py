from .multitask import ARCHS, MultiTaskModel, build_model  # noqa: F401
