from .multitask import ARCHS, MultiTaskModel, build_model  # noqa: F401
from .supernet import SupernetMultiTaskModel  # noqa: E402  (registers it)


def is_supernet(config):
    """Whether the config's Arch is a supernet (one set of weights for many subnets), by the
    class Arch.name registers, not by its spelling."""
    name = config["Arch"].get("name")
    return name in ARCHS.names() and issubclass(ARCHS.get(name), SupernetMultiTaskModel)
