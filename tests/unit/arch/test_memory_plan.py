"""ppufo.arch.memory_plan and tools/plan_memory.py: parameter counts from the lazily built model,
activations as Paddle actually keeps them (its host allocator's count), hand-computed values."""
import gc
import os
import re
import sys

import numpy as np
import paddle
import pytest
from paddle.base import core

from ppufo.arch import build_model
from ppufo.arch.backbone import build_backbone
from ppufo.arch.memory_plan import (GiB, MemoryPlan, backbone_memory, cnn_memory, is_paddleclas,
                                    optimizer_buffers, precision_of, vit_blocks)
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

from helpers import ROOT

TINY = ["Global.image_shape=[3,32,32]", "Arch.Backbone.depth=2"]
CLASSES = {"face": 11, "person": 12, "vehicle": 13, "product": 14}


def allocated():
    return core.host_memory_stat_current_value("Allocated", 0)


def count(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


@pytest.mark.parametrize("cfg,extra", [("quickstart.yaml", TINY),
                                       ("supernet_quickstart.yaml", TINY + ["Arch.Backbone.depths=[1,2]"])])
def test_parameter_count_equals_the_built_models(cfg, extra):
    config = load_config(os.path.join(ROOT, "configs", cfg), extra)
    plan = MemoryPlan(config, CLASSES)
    paddle.seed(0)
    model = build_model(config, CLASSES)
    assert sum(plan.params.values()) == count(model)
    assert plan.params["classifiers"] == sum(count(h.classifier) for h in model.heads.values())
    assert plan.largest_param == max(int(np.prod(p.shape)) for p in model.parameters())


def test_vit_base_parameter_count_under_lazy_guard():
    config = load_config(os.path.join(ROOT, "configs/quickstart.yaml"),
                         ["Arch.Backbone.name=ViT_base_patch16", "Arch.Backbone.depth=12",
                          "Global.image_shape=[3,224,224]"])
    assert MemoryPlan(config, CLASSES).params["backbone"] == 85_798_656  # tests/unit/arch/test_vit.py


def test_activation_estimate_matches_hand_computed_values():
    # dim 48, 4 heads of 12, MLP 192, 32x32 / 16 -> N = 5 tokens; DropPath only in block 2; batch 2
    with paddle.LazyGuard():
        m = build_backbone({"name": "ViT_tiny_patch16", "embed_dim": 48, "depth": 2, "num_heads": 4,
                            "drop_path_rate": 0.2}, img_size=[32, 32])
    blocks = vit_blocks(m)
    # per image, elements: LN inputs 480, LN stats 20, LN outputs 480, qkv output + q*scale + proj
    # input 1200, map 100, fc1 out + GELU out 1920 -> 4200; DropPath inputs + masks 482; outside
    # the blocks the final LN input and output 480 + stats 10
    fp32 = backbone_memory(m, blocks, [32, 32], 2, "fp32", "math", recompute=False)
    assert fp32 == {"input": 2 * 3 * 32 * 32 * 4, "saved": 2 * 4 * (490 + 4200 + 4682),
                    "working": 2 * 4 * (480 + 1920)}  # gradients: 2 N C + max(2 H N^2, 2 N M)
    rc = backbone_memory(m, blocks, [32, 32], 2, "fp32", "math", recompute=True)
    assert rc["saved"] == 2 * 4 * (490 + 2 * 240)  # only the block inputs
    assert rc["working"] == 2 * 4 * (4682 - 240) + fp32["working"]  # block 2 recomputed
    # bf16 O1 with flash attention: stream and statistics fp32, matmul operands 16-bit, O(N)
    # log-sum-exp instead of the map, a 16-bit copy of the images and of every block's weights
    o1 = backbone_memory(m, blocks, [32, 32], 2, "O1", "flash", recompute=False)
    block = 480 * 4 + 20 * 4 + 480 * 2 + 960 * 2 + 20 * 4 + 1920 * 2
    weights = 48 * 144 + 48 * 48 + 48 * 192 + 192 * 48
    assert o1["saved"] == 2 * (480 * 4 + 10 * 4 + 3 * 32 * 32 * 2 + 2 * block + 482 * 2) + 2 * 2 * weights


def test_recompute_reduces_vit_large_activations_by_the_expected_factor():
    with paddle.LazyGuard():
        m = build_backbone({"name": "ViT_large_patch16", "drop_path_rate": 0.2}, img_size=[384, 384])
    n, c, h, hidden = 577, 1024, 16, 4096
    block = 10 * n * c + 2 * n * hidden + 4 * n + h * n + 2  # flash attention, DropPath
    first = block - 2 * n * c - 2  # block 1 has DropPath rate 0
    off, on = (backbone_memory(m, vit_blocks(m), [384, 384], 1, "fp32", "flash", rc)["saved"] for rc in (0, 1))
    assert off / on == pytest.approx((2 * n * c + 2 * n + first + 23 * block) / (2 * n * c + 2 * n + 24 * n * c))
    assert 16 < off / on < 17 and on * 320 / GiB == pytest.approx(18.3, abs=0.1)  # 320 images per GPU


def _forward_kept_and_step_peak(model, x, forward):
    opt = paddle.optimizer.SGD(0.01, parameters=model.parameters())
    forward(x[:2]).square().mean().backward()  # gradients allocated; clear_grad keeps them
    opt.clear_grad()
    gc.collect()
    base = allocated()
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    out = forward(x)
    kept = allocated() - base
    out.square().mean().backward()
    del out
    return kept, core.host_memory_stat_peak_value("Allocated", 0) - base


@pytest.mark.parametrize("recompute", [False, True])
def test_saved_activations_are_what_paddle_allocates_for_the_plain_vit(recompute):
    paddle.seed(0)
    m = build_backbone({"name": "ViT_tiny_patch16", "embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 8,
                        "drop_path_rate": 0.1, "recompute": recompute}, img_size=[64, 64])
    m.train()
    kept, peak = _forward_kept_and_step_peak(m, paddle.randn([8, 3, 64, 64]), m)
    plan = backbone_memory(m, vit_blocks(m), [64, 64], 8, "fp32", "math", recompute)
    assert kept == plan["saved"]
    grad_temp = 4 * max(int(np.prod(p.shape)) for p in m.parameters())
    assert plan["saved"] + plan["working"] + grad_temp == pytest.approx(peak, rel=0.3)


@pytest.mark.parametrize("kind", ["largest", "smallest"])
def test_saved_activations_are_what_paddle_allocates_for_the_supernet(kind):
    paddle.seed(0)
    m = build_backbone({"name": "ViTSupernet", "embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 8,
                        "depths": [2, 3], "heads": [2, 4], "ffn_ratios": [0.5, 1.0], "drop_path_rate": 0.1},
                       img_size=[64, 64], tasks=["a", "b"])
    m.train()
    sub = getattr(m.space, kind)()
    kept, _ = _forward_kept_and_step_peak(m, paddle.randn([8, 3, 64, 64]), lambda x: m(x, "a", sub))
    plan = backbone_memory(m, vit_blocks(m, sub), [64, 64], 8, "fp32", "math", False)
    assert kept == plan["saved"]  # narrower weights are views: no copies


def test_precision_and_optimizer_state_from_the_config():
    old_bool = [load_config(os.path.join(ROOT, "configs/quickstart.yaml"), [f"Global.amp={v}"])["Global"]
                for v in ("false", "true")]
    assert [precision_of(g) for g in old_bool] == ["fp32", "O1"]  # the old bool, upgraded by load_config
    assert precision_of({"amp": {"enable": True, "dtype": "bfloat16", "level": "O2"}}) == "O2"
    assert precision_of({"amp": {"enable": False, "level": "O2"}}) == "fp32"
    assert [optimizer_buffers(c) for c in ({"name": "SGD", "momentum": 0.0}, {"name": "Momentum", "momentum": 0.9},
                                           {"name": "AdamW"})] == [0, 1, 2]


def run_cli(monkeypatch, capsys, *argv):
    from ppufo.cli import plan_memory
    monkeypatch.setattr(sys, "argv", ["plan_memory.py", *argv])
    plan_memory.main()
    return capsys.readouterr().out.strip().splitlines()


def test_cli_on_the_paper_config(monkeypatch, capsys):
    cfg = os.path.join(ROOT, "configs/ufo_vitl.yaml")
    out = run_cli(monkeypatch, capsys, "-c", cfg)  # as shipped: recompute + bf16 O1
    assert "classes: face 93,431, person 2,494, vehicle 44,411, product 11,318" in "\n".join(out)
    assert any(re.search(r"one GPU of 8: batch 320 = face 128 \+ person 64", line) for line in out)
    last = re.fullmatch(r".*ufo_vitl.yaml: ([\d.]+) GiB peak per GPU at batch 320 on 8 GPUs \(fits 80 GiB; "
                        r"largest batch (\d+); O1, recompute on\)", out[-1])
    assert last and float(last.group(1)) < 80 and int(last.group(2)) > 320
    fp32 = run_cli(monkeypatch, capsys, "-c", cfg, "--gpus", "8", "-o", "Arch.Backbone.recompute=false",
                   "Global.amp.enable=false")[-1]
    assert "does NOT fit 80 GiB" in fp32 and "fp32, recompute off" in fp32
    with pytest.raises(ConfigError, match="classes of .*unknown"):
        MemoryPlan(load_config(cfg, ["Tasks.face.datasets=[{name: ImageList, root: x}]"]))


# --- PaddleClas CNN backbones (BatchNorm): measured, not a formula -------------------------------
RESNET = ["Global.image_shape=[3,64,64]", "Arch.Backbone={name: PaddleClasBackbone, model: ResNet50}"]


@pytest.fixture(scope="module")
def resnet_plan():
    pytest.importorskip("paddleclas")
    return MemoryPlan(load_config(os.path.join(ROOT, "configs/quickstart.yaml"), RESNET), CLASSES)


def test_resnet_parameter_count_equals_the_built_models(resnet_plan):
    assert resnet_plan.cnn and resnet_plan.blocks is None and resnet_plan.attention is None
    paddle.seed(0)
    model = build_model(resnet_plan.config, CLASSES)
    assert sum(resnet_plan.params.values()) == count(model)
    assert resnet_plan.params["backbone"] == count(model.backbone) == 23_561_152  # ResNet50 without its fc
    assert resnet_plan.largest_param == max(int(np.prod(p.shape)) for p in model.parameters())
    assert is_paddleclas({"name": "ResNet50"}) and not is_paddleclas({"name": "ViT_large_patch16"})


def _saved_by_layers(model, x):
    """Bytes per tensor that the layers' backward passes need, from forward hooks (independent of
    the allocator): conv and BN inputs, ReLU outputs, pooling inputs and outputs, each tensor once,
    the input images left out; and the BN layers' channels."""
    saved, rules = {}, {"Conv2D": ("in",), "BatchNorm": ("in",), "ReLU": ("out",), "MaxPool2D": ("in", "out"),
                        "AdaptiveAvgPool2D": ("in", "out")}

    def hook(layer, inputs, out):
        for what in rules.get(type(layer).__name__, ()):
            t = inputs[0] if what == "in" else out
            saved[t.data_ptr()] = 4 * int(np.prod(t.shape))
    handles = [m.register_forward_post_hook(hook) for m in model.sublayers() if not m.sublayers()]
    out = model(x)
    for h in handles:
        h.remove()
    saved.pop(x.data_ptr(), None)
    channels = sum(m.weight.shape[0] for m in model.sublayers() if type(m).__name__ == "BatchNorm")
    return sum(saved.values()), channels, out


def test_resnet_activations_are_what_the_allocator_measures_and_scale_with_the_batch(resnet_plan):
    m = resnet_plan.measured
    # per image: exactly the tensors the layers' backward needs (counted by hooks at batch 3)
    paddle.seed(0)
    net = build_backbone({"name": "PaddleClasBackbone", "model": "ResNet50"}, img_size=[64, 64])
    net.train()
    by_layers, channels, _ = _saved_by_layers(net, paddle.randn([3, 3, 64, 64]))
    assert m["per_image"] * 3 == by_layers
    assert m["fixed"] == 2 * 4 * channels  # BN's saved batch mean and variance, fp32, per step
    # at batch 4, Paddle's allocator after the forward: the plan to the byte (tolerance 0.1%: an
    # allocator rounding or a Paddle change, not a modelling error); the step's peak within 5%
    kept, peak = _forward_kept_and_step_peak(net, paddle.randn([4, 3, 64, 64]), net)
    plan = cnn_memory(m, [64, 64], 4, "fp32")
    assert plan["saved"] == pytest.approx(kept, rel=1e-3)
    grad_temp = 4 * max(int(np.prod(p.shape)) for p in net.parameters())
    assert plan["saved"] + plan["working"] + grad_temp == pytest.approx(peak, rel=0.05)
    # linear in the batch: saved = fixed + batch x per image, at every precision
    for precision in ("fp32", "O1", "O2"):
        one, eight = (cnn_memory(m, [64, 64], b, precision) for b in (1, 8))
        per_step = m["fixed"] + (2 * m["weights16"] if precision == "O1" else 0)
        assert eight["saved"] - per_step == 8 * (one["saved"] - per_step)
        assert eight["working"] == 8 * one["working"] and eight["input"] == 8 * one["input"]


def test_resnet_16_bit_sizes_are_computed_from_the_fp32_measurement(resnet_plan):
    m = {"per_image": 1000, "fixed": 80, "working_per_image": 10, "weights16": 7}
    pixels = 3 * 8 * 8
    assert cnn_memory(m, [8, 8], 2, "fp32") == {"input": 2 * pixels * 4, "saved": 2000 + 80, "working": 20}
    o1 = cnn_memory(m, [8, 8], 2, "O1")  # 16-bit activations, a 16-bit image copy, 16-bit conv weights
    assert o1["saved"] == 2 * (500 + 2 * pixels) + 80 + 2 * 7 and o1["working"] == 10
    assert cnn_memory(m, [8, 8], 2, "O2")["saved"] == 2 * (500 + 2 * pixels) + 80
    with pytest.raises(ConfigError, match="PaddleClas backbones have none"):
        resnet_plan.backbone_memory(1, recompute=True)


def test_cli_on_a_resnet_config_says_what_was_measured(monkeypatch, capsys):
    pytest.importorskip("paddleclas")
    cfg = os.path.join(ROOT, "configs/ufo_vitl.yaml")
    out = run_cli(monkeypatch, capsys, "-c", cfg, "-o", "Arch.Backbone={name: PaddleClasBackbone, model: ResNet50}",
                  "Global.image_shape=[3,96,96]")
    text = "\n".join(out)
    assert "PaddleClasBackbone ResNet50 (PaddleClas CNN): 53 BatchNorm layers, 2048-d feature, 96x96" in text
    assert "fp32 MEASURED" in text and "AMP COMPUTED" in text and "n/a (PaddleClas backbones have no recompute)" in text
    assert re.fullmatch(r".*ufo_vitl.yaml: [\d.]+ GiB peak per GPU at batch 320 on 8 GPUs \(fits 80 GiB; "
                        r"largest batch \d+; O1, recompute off\)", out[-1])


def test_a_homogeneous_sampler_is_planned_at_its_costliest_step():
    homo = ["DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler", "Tasks.face.batch_size=4096",
            "Tasks.person.batch_size=2048", "Tasks.vehicle.batch_size=2048", "Tasks.product.batch_size=2048"]
    plan = MemoryPlan(load_config(os.path.join(ROOT, "configs/ufo_vitl.yaml"), homo))
    assert plan.homogeneous and plan.step_batches(8)[1] == {"person": 256}
    batch, step = plan.peak_step(8)
    assert batch == {"face": 512}  # the largest batch and classifier
    assert step == plan.step({"face": 512}) and step["peak"] > plan.step({"person": 256})["peak"]
    best = plan.max_batch(80 * GiB)
    assert plan.step({"face": best})["peak"] <= 80 * GiB < plan.step({"face": best + 1})["peak"]
    assert plan.step({"product": best + 1})["peak"] <= 80 * GiB  # face decides
