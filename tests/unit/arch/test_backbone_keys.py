"""A backbone given by name refuses keys it does not use (PaddleClas models swallow **kwargs)."""
import os

import numpy as np
import paddle
import pytest

from helpers import ROOT
from ppufo.arch import build_model
from ppufo.arch.backbone import build_backbone
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

pytest.importorskip("paddleclas")
QUICK = os.path.join(ROOT, "configs/quickstart.yaml")
SMALL = ["Global.image_shape=[3,32,32]"]


def test_switching_by_name_keeps_vit_keys_and_is_refused_with_the_section_hint():
    config = load_config(QUICK, SMALL + ["Arch.Backbone.name=PaddleClasBackbone", "Arch.Backbone.model=ResNet18"])
    assert config["Arch"]["Backbone"]["depth"] == 6  # the quickstart ViT's keys stay
    with pytest.raises(ConfigError) as e:
        build_model(config)
    msg = str(e.value)
    assert msg.startswith("Arch.Backbone (PaddleClasBackbone ResNet18): unknown key(s) ['depth', 'drop_path_rate']")
    assert "'stem_act'" in msg and "'max_pool'" in msg  # ResNet's own arguments are listed as accepted
    assert "'version'" not in msg  # ResNet18 passes it itself: giving it again would clash
    assert '-o "Arch.Backbone={name: PaddleClasBackbone, model: ResNet18}"' in msg


def test_the_suggested_whole_section_override_builds():
    config = load_config(QUICK, SMALL + ["Arch.Backbone={name: PaddleClasBackbone, model: ResNet18}"])
    assert config["Arch"]["Backbone"] == {"name": "PaddleClasBackbone", "model": "ResNet18"}
    model = build_model(config)
    assert model.backbone.out_dim == 512
    assert model.backbone(paddle.zeros([2, 3, 32, 32])).shape == [2, 512]


def test_a_resnet_class_keyword_is_accepted_and_used():
    paddle.seed(0)
    plain = build_backbone({"name": "PaddleClasBackbone", "model": "ResNet18"}, img_size=[32, 32])
    paddle.seed(0)
    no_pool = build_backbone({"name": "PaddleClasBackbone", "model": "ResNet18", "max_pool": False},
                             img_size=[32, 32])
    assert plain.net.max_pool is not False and no_pool.net.max_pool is False
    x = paddle.randn([2, 3, 32, 32])
    plain.eval(), no_pool.eval()
    assert not np.allclose(plain(x).numpy(), no_pool(x).numpy())  # same weights, no stem pooling


@pytest.mark.parametrize("cfg, unknown", [
    ({"name": "PaddleClasBackbone", "model": "ResNet18", "stem_actt": "relu"}, "['stem_actt']"),
    ({"name": "PaddleClasBackbone", "model": "ResNet18", "version": "vd"}, "['version']"),
    ({"name": "ResNet50", "max_pool": False}, "['max_pool']"),
])
def test_a_typo_or_unused_keyword_is_refused(cfg, unknown):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) " + unknown.replace("[", r"\[").replace("]", r"\]")) as e:
        build_backbone(cfg, img_size=[32, 32])
    assert "Arch.Backbone.name" not in str(e.value)  # no other backbone owns these: no switch hint


def test_resnet50_with_vit_keys_gets_the_hint():
    with pytest.raises(ConfigError, match=r"Arch.Backbone \(ResNet50\): unknown key\(s\) \['depth'\].*"
                                          r"-o \"Arch.Backbone=\{name: ResNet50\}\""):
        build_backbone({"name": "ResNet50", "depth": 6}, img_size=[32, 32])


def test_model_keys_follow_kwargs_through_the_paddleclas_source():
    from paddleclas.ppcls.arch import backbone as pc
    from ppufo.arch.backbone.paddleclas_backbones import model_keys
    keys, complete = model_keys(pc.ResNet18)
    assert complete and {"use_ssld", "layer_type", "stem_act", "max_pool"} <= keys
    assert not keys & {"config", "stages_pattern", "version", "kargs"}  # set by ResNet18 / the **kwargs itself
    keys, complete = model_keys(pc.PPLCNet_x1_0)  # PPLCNet -> super().__init__(**kw) -> self.init_net(**kw)
    assert complete and {"dropout_prob", "return_stages", "stop_after"} <= keys and "scale" not in keys
    keys, complete = model_keys(pc.SwinTransformer_tiny_patch4_window7_224)  # kwargs.get("use_fused_attn")
    assert complete and "use_fused_attn" in keys and "depths" not in keys


def test_a_model_whose_kwargs_cannot_be_followed_refuses_and_says_so(monkeypatch):
    import paddleclas.ppcls.arch.backbone as pc

    def Opaque(pretrained=False, width=1, **kwargs):  # kwargs go somewhere ppufo cannot read
        return pc.ResNet18(**dict(kwargs))
    monkeypatch.setattr(pc, "Opaque", Opaque, raising=False)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stem_act'\]; accepted: \['model', 'pretrained', "
                                          r"'img_size', 'width'\] \(ppufo cannot tell"):
        build_backbone({"name": "PaddleClasBackbone", "model": "Opaque", "stem_act": "relu"}, img_size=[32, 32])
