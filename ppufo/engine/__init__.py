from ..arch import is_supernet
from .supernet_trainer import SupernetTrainer
from .trainer import Trainer


def build_trainer(config):
    """The supernet trainer for a supernet Arch, else the All-in-One trainer."""
    return SupernetTrainer(config) if is_supernet(config) else Trainer(config)
