import pytest

from ppufo.utils.errors import ConfigError
from ppufo.utils.registry import Registry


def test_register_build_inject_and_errors():
    reg = Registry("widget")

    @reg.register
    class Box:
        def __init__(self, width, height=2, num_classes=None):
            self.width, self.height, self.num_classes = width, height, num_classes

    @reg.register(name="Alias")
    def make(size):
        return ("made", size)

    b = reg.build({"name": "Box", "width": 3}, num_classes=10, unrelated=1)
    assert (b.width, b.height, b.num_classes) == (3, 2, 10)
    assert reg.build({"name": "Box", "width": 3, "num_classes": 5}, num_classes=10).num_classes == 5
    assert reg.build({"name": "Alias", "size": 4}) == ("made", 4)
    assert reg.names() == ["Alias", "Box"] and "Box" in reg
    with pytest.raises(ConfigError, match=r"unknown widget 'Circle'; known: Alias, Box"):
        reg.build({"name": "Circle"})
    with pytest.raises(ConfigError, match=r"X \(Box\): unknown key\(s\) \['depth'\]; accepted: \['width', 'height', 'num_classes'\]"):
        reg.build({"name": "Box", "width": 1, "depth": 2}, where="X")
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['width'\]"):
        reg.build({"name": "Box"})
    with pytest.raises(ConfigError, match="expected a mapping with a 'name' key"):
        reg.build({"width": 1})
    with pytest.raises(KeyError, match="registered twice"):
        reg.register(Box)


def test_project_registries_list_known_names():
    from ppufo.arch import ARCHS
    from ppufo.arch.backbone import BACKBONES
    from ppufo.arch.head import HEADS, NECKS
    from ppufo.data.datasets import DATASETS
    from ppufo.data.samplers import SAMPLERS
    from ppufo.data.transforms import TRANSFORMS
    from ppufo.loss import LOSSES
    from ppufo.metric import METRICS
    from ppufo.optimizer import LR_SCHEDULERS, OPTIMIZERS
    expected = {
        ARCHS: {"MultiTaskModel"}, BACKBONES: {"ViT_base_patch16", "ViT_large_patch16", "ResNet50"},
        HEADS: {"CosFace", "ArcFace", "LinearHead"}, NECKS: {"BNNeck"},
        DATASETS: {"Market1501", "DukeMTMC", "MSMT17", "VeRi776", "VehicleID", "VeRiWild", "SOP",
                   "MS1MRecordIO", "FaceVerificationBin", "ImageFolder", "ImageList"},
        SAMPLERS: {"PKSampler", "RandomSampler", "HeterogeneousBatchSampler", "HomogeneousBatchSampler"},
        TRANSFORMS: {"AutoAugment", "RandomErasing", "Resize", "Normalize"}, LOSSES: {"CELoss", "TripletLoss"},
        METRICS: {"ReIDMetric", "VehicleIDMetric", "VerificationMetric", "RecallAtK"},
        LR_SCHEDULERS: {"WarmupCosine"}, OPTIMIZERS: {"SGD"},
    }
    for reg, names in expected.items():
        assert names <= set(reg.names()), (reg.kind, reg.names())
        with pytest.raises(ConfigError, match=f"unknown {reg.kind} 'Nope'; known: "):
            reg.get("Nope")
