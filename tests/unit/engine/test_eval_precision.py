"""Evaluation and calibration in the training precision: the backbone under the configured
autocast, necks and metrics in fp32, Global.amp.eval_fp32 forcing fp32. Autocast casts nothing on
a CPU, so what runs under which context is read from Paddle's AMP state (helpers.autocast_now) on
the GPU code path (gpu_amp, tests/unit/engine/conftest.py), and low-precision backbone outputs are
produced by hand where the cast back to fp32 is the point."""
import numpy as np
import paddle
import pytest

from helpers import autocast_now, tiny_config, tiny_supernet_config
from ppufo.arch import build_model
from ppufo.engine.amp import MixedPrecision
from ppufo.engine.evaluator import Evaluator
from ppufo.engine.supernet_trainer import SupernetTrainer
from ppufo.engine.trainer import Trainer
from ppufo.utils.errors import ConfigError

BF16_O1, BF16_O2 = (True, "bfloat16", "O1"), (True, "bfloat16", "O2")


def amp_cfg(level="O1", eval_fp32=False, enable=True):
    return {"enable": enable, "dtype": "bfloat16", "level": level, "eval_fp32": eval_fp32}


@pytest.mark.parametrize("cfg, want", [
    (amp_cfg("O1"), BF16_O1),               # evaluation in the training precision
    (amp_cfg("O1", eval_fp32=True), None),  # forced fp32
    (amp_cfg("O2"), BF16_O2),               # O2's low-precision weights need autocast
    (amp_cfg(enable=False), None),
    (amp_cfg(enable=False, eval_fp32=True), None),
])
def test_eval_autocast_follows_the_level_and_the_switch(gpu_amp, cfg, want):
    with MixedPrecision(cfg, "gpu").eval_autocast():
        assert autocast_now() == want
    assert autocast_now() is None


def test_eval_fp32_under_o2_is_refused_on_every_device():
    for device in ("gpu", "cpu"):
        with pytest.raises(ConfigError, match=r"Global.amp.eval_fp32 with level O2: O2 keeps the weights "
                                              r"in bfloat16.*use level O1"):
            MixedPrecision(amp_cfg("O2", eval_fp32=True), device)
    MixedPrecision(amp_cfg("O2", eval_fp32=True, enable=False), "cpu")  # AMP off: nothing to refuse


def probe(model, task, seen):
    """Record the autocast state of the backbone's forward and (with the input dtype) of
    ``task``'s neck BatchNorm."""
    model.backbone.register_forward_pre_hook(lambda layer, x: seen.append(("backbone", autocast_now())))
    model.heads[task].neck.bn.register_forward_pre_hook(
        lambda layer, x: seen.append(("neck", autocast_now()[0] if autocast_now() else None, x[0].dtype)))


def test_embed_runs_the_neck_in_fp32_whatever_the_callers_autocast(tmp_path, monkeypatch):
    model = build_model(tiny_config(str(tmp_path), tmp_path / "out"))  # not prepared by MixedPrecision
    model.eval()
    seen = []
    probe(model, "person", seen)
    x = paddle.randn([3, 3, 32, 32])
    ref = model.embed(x, "person").numpy()
    seen.clear()
    with paddle.amp.auto_cast(enable=True, dtype="bfloat16", level="O1"):
        got = model.embed(x, "person")
    assert seen == [("backbone", BF16_O1), ("neck", False, paddle.float32)]
    np.testing.assert_array_equal(got.numpy(), ref)  # nothing is cast on a CPU
    # a backbone that gives bfloat16 (as under autocast on a GPU): the neck still gets fp32
    real = model.backbone_features
    monkeypatch.setattr(model, "backbone_features", lambda *a: [f.astype("bfloat16") for f in real(*a)])
    low = model.embed(x, "person")
    assert low.dtype == paddle.float32 and seen[-1] == ("neck", False, paddle.float32)
    np.testing.assert_allclose(low.numpy(), ref, atol=0.05)  # bfloat16 input: ~3 significant digits
    assert not np.array_equal(low.numpy(), ref)


@pytest.mark.parametrize("eval_fp32, backbone", [(False, BF16_O1), (True, None)])
def test_training_evaluation_runs_the_backbone_in_the_training_precision(make_config, gpu_amp, monkeypatch,
                                                                         eval_fp32, backbone):
    trainer = Trainer(make_config("Global.amp.enable=true", f"Global.amp.eval_fp32={str(eval_fp32).lower()}"))
    seen, features = [], []
    probe(trainer.model, "person", seen)
    trainer.evaluator = Evaluator(trainer.cfg, trainer.model, only=["Market1501"])
    for ts in trainer.evaluator.sets:
        compute = ts.protocol.compute
        monkeypatch.setattr(ts.protocol, "compute", lambda metric, source, embedded, compute=compute: (
            features.extend(f.dtype for f, _ in embedded.values()), compute(metric, source, embedded))[1])
    result = trainer.evaluate(1)
    assert [r["set"] for r in result["sets"]] == ["Market1501"]
    assert {s[1] for s in seen if s[0] == "backbone"} == {backbone}
    assert {s[1:] for s in seen if s[0] == "neck"} == {(False, paddle.float32)}  # autocast off, fp32 input
    assert features and set(features) == {np.dtype("float32")}  # what the metric computes on
    assert autocast_now() is None


@pytest.mark.parametrize("eval_fp32, backbone", [(False, BF16_O1), (True, None)])
def test_supernet_calibration_and_evaluation_run_in_the_training_precision(demo_root, tmp_path, gpu_amp,
                                                                           eval_fp32, backbone):
    cfg = tiny_supernet_config(demo_root, tmp_path, "Global.amp.enable=true", "Supernet.calibration_images=8",
                               f"Global.amp.eval_fp32={str(eval_fp32).lower()}")
    trainer = SupernetTrainer(cfg)
    seen, projected = [], []
    probe(trainer.model, "person", seen)
    neck = trainer.model.heads["person"].neck
    project = neck.project
    neck.project = lambda x: (projected.append((autocast_now()[0], x.dtype)), project(x))[1]
    trainer.evaluator = Evaluator(trainer.cfg, trainer.model, only=["Market1501"])
    trainer.evaluate(1)
    # calibration (every evaluated task's images) and evaluation: the backbone as configured
    assert len(seen) > 2 and {s[1] for s in seen if s[0] == "backbone"} == {backbone}
    assert projected[0] == (False, paddle.float32)  # the calibration's neck input
    assert {s[1:] for s in seen if s[0] == "neck"} == {(False, paddle.float32)}


@pytest.mark.parametrize("eval_fp32, backbone", [(False, BF16_O1), (True, None)])
def test_precise_bn_runs_the_backbone_in_the_training_precision(make_config, gpu_amp, eval_fp32, backbone):
    pytest.importorskip("paddleclas")
    from ppufo.engine.precise_bn import recompute_backbone_bn
    config = make_config("Arch.Backbone={name: PaddleClasBackbone, model: ResNet18}", "Global.amp.enable=true",
                         f"Global.amp.eval_fp32={str(eval_fp32).lower()}")
    model = build_model(config, {t: 5 for t in config["Tasks"]})
    seen = []
    model.backbone.register_forward_pre_hook(lambda layer, x: seen.append(autocast_now()))
    assert recompute_backbone_bn(model, config, 2)["batches"] == 2
    assert seen == [backbone, backbone]
