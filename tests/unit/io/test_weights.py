"""One weight loader (io.weights.load_weights) and the per-backbone checkpoint filters it applies."""
import os
import re

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import ppufo
from ppufo.arch import build_model
from ppufo.arch.backbone import build_backbone
from ppufo.arch.backbone.paddleclas_backbones import PaddleClasFeatures
from ppufo.io.weights import load_model, load_weights, read_weights
from ppufo.utils.errors import ConfigError

from helpers import tiny_config

VIT = {"name": "VisionTransformer", "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0}


def old_resize(pos, grid):
    """The pre-io code path, kept verbatim in spirit: square side from the position count,
    bicubic on the grid, CLS row kept."""
    side = int(round((pos.shape[1] - 1) ** 0.5))
    cls, g = pos[:, :1], pos[:, 1:]
    c = g.shape[-1]
    g = g.reshape([1, side, side, c]).transpose([0, 3, 1, 2])
    g = F.interpolate(g, size=list(grid), mode="bicubic", align_corners=False)
    return paddle.concat([cls, g.transpose([0, 2, 3, 1]).reshape([1, -1, c])], axis=1)


def test_vit_filter_resizes_a_14x14_grid_to_8x8_as_before():
    paddle.seed(0)
    big = build_backbone(VIT, img_size=[224, 224])  # 14 x 14 patches
    small = build_backbone(VIT, img_size=[128, 128])  # 8 x 8
    state = {k: v for k, v in big.state_dict().items()}
    state["head.weight"] = paddle.ones([48, 10])  # an ImageNet classifier: dropped
    out = small.checkpoint_filter(state, "vit.pdparams")
    assert "head.weight" not in out and sorted(out) == sorted(small.state_dict())
    assert out["pos_embed"].shape == [1, 65, 48]
    expected = old_resize(big.pos_embed, [8, 8]).numpy()
    np.testing.assert_array_equal(out["pos_embed"].numpy(), expected)
    np.testing.assert_array_equal(out["pos_embed"].numpy()[:, 0], big.pos_embed.numpy()[:, 0])  # CLS kept
    assert np.abs(expected[:, 1:] - big.pos_embed.numpy()[:, 1:65]).max() > 1e-3  # really resized
    loaded = load_weights(small, state, what="test")
    np.testing.assert_array_equal(small.pos_embed.numpy(), expected)
    assert loaded.path == "the state dict" and loaded.missing == [] and loaded.unexpected == []


def test_a_non_square_grid_of_another_size_is_refused_naming_the_file():
    src = build_backbone(VIT, img_size=[32, 48])  # 2 x 3 positions
    dst = build_backbone(VIT, img_size=[64, 64])
    with pytest.raises(ConfigError, match=r"^test: the state dict: pos_embed has 6 positions, not a square grid, "
                                          r"and this model's grid is 4x4"):
        load_weights(dst, src.state_dict(), what="test")
    same = build_backbone(VIT, img_size=[32, 48])  # the same non-square grid loads as it is
    load_weights(same, src.state_dict())
    np.testing.assert_array_equal(same.pos_embed.numpy(), src.pos_embed.numpy())


def test_supernet_filter_takes_a_plain_vit_into_every_path():
    paddle.seed(1)
    plain = build_backbone(VIT, img_size=[32, 32])
    net = build_backbone({**VIT, "name": "ViTSupernet", "depths": [1, 2], "heads": [1, 3]},
                         img_size=[32, 32], tasks=["face", "person"])
    mix = net.state_dict()["blocks.0.ffn.mix_logit.0"].numpy().copy()
    checkpoint = {"backbone." + k: v for k, v in plain.state_dict().items()}
    checkpoint["heads.face.neck.bn.weight"] = paddle.ones([48])  # an All-in-One checkpoint's head: not taken
    out = net.checkpoint_filter(checkpoint, "aio.pdparams")
    assert sorted(out) == sorted(net.state_dict())
    qkv = plain.state_dict()["blocks.1.attn.qkv.weight"].numpy()
    for i, part in enumerate("qkv"):
        np.testing.assert_array_equal(out[f"blocks.1.attn.{part}.weight"].numpy(), qkv[:, 48 * i:48 * (i + 1)])
    for path in ("ffn.shared", "ffn.task.face", "ffn.task.person"):
        np.testing.assert_array_equal(out[f"blocks.0.{path}.fc2.weight"].numpy(),
                                      plain.state_dict()["blocks.0.mlp.fc2.weight"].numpy())
    np.testing.assert_array_equal(out["blocks.0.ffn.mix_logit.0"].numpy(), mix)  # no counterpart: kept
    load_weights(net, checkpoint)  # strict: every supernet key is set
    cut = {k: v for k, v in plain.state_dict().items() if not k.startswith("blocks.1.")}
    # what the file lacks stays missing: block 1's norms, q/k/v/proj and its 3 FFN paths (2 x 12 tensors)
    with pytest.raises(ConfigError, match=r"^w: the state dict: does not fit the model:\n  missing 24: "
                                          r"blocks\.1\.attn\.k\.bias \[48\]"):
        load_weights(net, cut, what="w")
    # what has no place in it (a deeper ViT's block 2) is named, not dropped
    deeper = dict(plain.state_dict(), **{"blocks.2.mlp.fc1.bias": paddle.ones([96])})
    with pytest.raises(ConfigError, match=r"does not fit the model:\n  unexpected 1: blocks\.2\.mlp\.fc1\.bias \[96\]$"):
        load_weights(net, deeper, what="w")


def test_released_filter_renames_the_reference_heads(tmp_path):
    cfg = tiny_config(str(tmp_path), tmp_path, ["Arch.Backbone.embed_dim=64", "Arch.Backbone.num_heads=4",
                                                "Global.released_heads.person=task2"]
                      + [f"Tasks.{t}.neck.feature_dim=null" for t in ("face", "person", "vehicle", "product")])
    model = build_model(cfg)
    own = model.state_dict()
    ref = {"backbone." + k[len("backbone."):]: v for k, v in own.items() if k.startswith("backbone.")}
    for h in ("task1", "task2", "task3", "task4"):
        for n in ("weight", "bias", "_mean", "_variance"):
            ref[f"heads.{h}.bottleneck.0.{n}"] = paddle.full([64], float(h[-1]))
    out = model.checkpoint_filter(ref, "allinone.pdmodel")
    assert sorted(out) == sorted(own)
    heads = {"face": 1, "person": 2, "vehicle": 3, "product": 4}
    for task, h in heads.items():
        assert float(out[f"heads.{task}.neck.bn._mean"][0]) == h
    assert out["backbone.norm.weight"] is ref["backbone.norm.weight"]
    ppufo_ckpt = {k: v for k, v in own.items()}
    assert model.checkpoint_filter(ppufo_ckpt, "p") is ppufo_ckpt  # a ppufo checkpoint passes as it is
    with pytest.raises(ConfigError, match=r"^Global.pretrained_model: the state dict: is a state dict of 1 entries "
                                          r"in no known layout"):
        load_weights(model, {"w": paddle.ones([1])}, what="Global.pretrained_model")


def test_paddleclas_filter_drops_the_removed_classifier_and_prefixes_net():
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.Flatten())
    features = PaddleClasFeatures(net, 4, dropped=["fc"])
    state = {"0.weight": paddle.ones([4, 3, 3, 3]), "0.bias": paddle.ones([4]),
             "fc.weight": paddle.ones([4, 1000]), "fc.bias": paddle.ones([1000])}
    out = features.checkpoint_filter(state, "r.pdparams")
    assert sorted(out) == ["net.0.bias", "net.0.weight"]
    assert features.checkpoint_filter({"backbone.net.0.bias": 1}, "c") == {"net.0.bias": 1}  # a ppufo checkpoint
    load_weights(features, state)
    assert float(net[0].weight.sum()) == 4 * 27


def test_a_paddleclas_pdparams_loads_through_arch_backbone_pretrained(tmp_path):
    pytest.importorskip("paddleclas")
    from paddleclas.ppcls.arch.backbone import ResNet18
    paddle.seed(3)
    theirs = ResNet18(pretrained=False)
    paddle.save(theirs.state_dict(), str(tmp_path / "r18.pdparams"))
    ours = build_backbone({"name": "PaddleClasBackbone", "model": "ResNet18", "pretrained": str(tmp_path / "r18")},
                          img_size=[32, 32])
    for k, v in theirs.state_dict().items():
        if not k.startswith("fc."):
            np.testing.assert_array_equal(ours.state_dict()["net." + k].numpy(), v.numpy(), err_msg=k)


def test_a_mis_shaped_key_names_the_option_the_file_and_the_key(tmp_path):
    model = build_backbone(VIT, img_size=[32, 32])
    state = dict(model.state_dict(), **{"norm.weight": paddle.ones([47])})
    paddle.save({"backbone." + k: v for k, v in state.items()}, str(tmp_path / "bad.pdparams"))
    with pytest.raises(ConfigError) as e:
        load_weights(model, str(tmp_path / "bad"), what="Arch.Backbone.pretrained")
    msg = str(e.value)
    assert msg.startswith(f"Arch.Backbone.pretrained: {tmp_path / 'bad.pdparams'}: is a ppufo checkpoint")
    assert "mis-shaped 1: norm.weight file [47], model [48]" in msg
    # a model without a filter: the generic check says the same
    plain = paddle.nn.Linear(3, 2)
    paddle.save({"weight": paddle.ones([3, 3]), "bias": paddle.ones([2]), "extra": paddle.ones([1])},
                str(tmp_path / "lin.pdparams"))
    with pytest.raises(ConfigError) as e:
        load_weights(plain, str(tmp_path / "lin.pdparams"), what="w")
    assert str(e.value) == (f"w: {tmp_path / 'lin.pdparams'}: does not fit the model:\n  unexpected 1: extra [1]\n"
                            f"  mis-shaped 1: weight file [3, 3], model [3, 2]")


def test_strict_lists_missing_and_unexpected_keys_and_lenient_returns_them(tmp_path):
    plain = paddle.nn.Linear(3, 2)
    state = {"weight": paddle.full([3, 2], 2.0), "extra": paddle.ones([1])}
    with pytest.raises(ConfigError, match=r"missing 1: bias \[2\]\n  unexpected 1: extra \[1\]"):
        load_weights(plain, state)
    loaded = load_weights(plain, state, strict=False)
    assert (loaded.missing, loaded.unexpected) == (["bias"], ["extra"])
    assert float(plain.weight.sum()) == 12.0


def test_load_model_sizes_the_heads_from_the_checkpoint(tmp_path):
    cfg = tiny_config(str(tmp_path), tmp_path)
    trained = build_model(cfg, {"face": 7, "person": 5, "vehicle": 3, "product": 4})
    paddle.save(trained.state_dict(), str(tmp_path / "m.pdparams"))
    from ppufo.arch.multitask import num_classes_from_state
    seen = []

    def build(state):
        seen.append(num_classes_from_state(state, list(cfg["Tasks"])))
        return build_model(cfg, seen[-1])
    model = load_model(build, str(tmp_path / "m"), what="Global.pretrained_model")
    assert seen == [{"face": 7, "person": 5, "vehicle": 3, "product": 4}]
    for k, v in trained.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    assert read_weights(str(tmp_path / "m"), "x")[1] == str(tmp_path / "m.pdparams")


ARCH = os.path.join(os.path.dirname(ppufo.__file__), "arch")
IO_CALLS = re.compile(r"\bopen\(|load_state\(|paddle\.load\(|paddle\.save\(|read_weights\(|np\.load\(")


def test_the_model_files_do_no_io():
    """Weights reach a model only through io.weights. The one file read left in ppufo/arch is a
    subnet's JSON (space.load_subnet, a config value, not weights)."""
    found = []
    for folder, _, files in os.walk(ARCH):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                for n, line in enumerate(open(path), 1):
                    if IO_CALLS.search(line):
                        found.append(f"{os.path.relpath(path, ARCH)}:{n}: {line.strip()}")
    assert found == ["space.py:52: with open(path) as f:"], found
