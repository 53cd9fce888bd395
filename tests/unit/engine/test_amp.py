"""Global.amp on CPU: Paddle's autocast and GradScaler do nothing here, so the GPU code path is
forced (amp.available, and a GradScaler that believes it is on a GPU) and what it does is checked
through Paddle's own AMP state, which autocast records even where it then does nothing."""
import inspect
import sys
import types

import numpy as np
import paddle
import pytest

from ppufo.engine.amp import MixedPrecision, fp32_forward
from ppufo.engine.trainer import Trainer
from ppufo.utils.checkpoint import read_states
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

from helpers import ROOT, autocast_now


def test_amp_is_a_section_and_the_old_bool_still_loads(tmp_path):
    cfg = load_config(f"{ROOT}/configs/quickstart.yaml", ["Global.amp=true"])
    assert cfg["Global"]["amp"] == {"enable": True, "dtype": "bfloat16", "level": "O1", "eval_fp32": False}
    old = tmp_path / "old.yaml"
    old.write_text(f"_BASE_: {ROOT}/configs/quickstart.yaml\nGlobal: {{amp: false}}\n")
    cfg = load_config(str(old), ["Global.amp.dtype=float16", "Global.amp.level=O2"])
    assert cfg["Global"]["amp"] == {"enable": False, "dtype": "float16", "level": "O2", "eval_fp32": False}
    with pytest.raises(ConfigError, match=r"Global\.amp\.dtype: 'fp8' is not one of \['bfloat16', 'float16'\]"):
        load_config(f"{ROOT}/configs/quickstart.yaml", ["Global.amp.dtype=fp8"])


def test_amp_is_ignored_on_cpu_with_a_warning():
    warned = []
    log = types.SimpleNamespace(warning=lambda msg, *a: warned.append(msg % a))
    amp = MixedPrecision({"enable": True, "dtype": "float16", "level": "O2"}, "cpu", log)
    assert not amp.enable and amp.scaler is None
    assert warned == ["Global.amp is ignored on cpu (mixed precision needs a GPU)"]
    assert MixedPrecision({"enable": False, "dtype": "bfloat16", "level": "O1"}, "gpu").scaler is None


def test_only_the_backbone_runs_under_autocast_heads_and_losses_in_fp32(make_config, gpu_amp):
    trainer = Trainer(make_config("Global.amp.enable=true"))
    assert trainer.amp.enable and trainer.amp.scaler is None  # bfloat16: no loss scaling
    seen = []
    model = trainer.model
    model.backbone.register_forward_pre_hook(lambda layer, x: seen.append(("backbone", autocast_now())))
    for t in trainer.tasks:
        head = model.heads[t]
        head.neck.bn.register_forward_pre_hook(  # inside the neck's forward
            lambda layer, x, t=t: seen.append((f"{t} bn", autocast_now(), x[0].dtype)))
        head.classifier.cosine = lambda x, f=head.classifier.cosine, t=t: (
            seen.append((f"{t} classifier", autocast_now(), x.dtype)), f(x))[1]
        trainer.losses[t].register_forward_pre_hook(lambda layer, x, t=t: seen.append((f"{t} loss", autocast_now())))
    stats = trainer.train_step(next(iter(trainer.loader)), 1)
    assert seen[0] == ("backbone", (True, "bfloat16", "O1"))
    fp32_off = (False, "float16", "O1")  # auto_cast(enable=False)
    for t in trainer.tasks:
        assert (f"{t} bn", fp32_off, paddle.float32) in seen and (f"{t} classifier", fp32_off, paddle.float32) in seen
        assert (f"{t} loss", None) in seen  # outside any autocast
    assert np.isfinite(float(stats["loss"]))


def test_heads_given_low_precision_features_compute_in_fp32(make_config, gpu_amp):
    trainer = Trainer(make_config("Global.amp.enable=true"))
    head = trainer.model.heads["person"]
    assert head.neck.forward.fp32 and head.classifier.forward.fp32
    feat = paddle.randn([8, trainer.model.backbone.out_dim]).astype("bfloat16")
    out = head(feat, paddle.arange(8))
    assert out["embedding"].dtype == out["logits"].dtype == paddle.float32
    assert head.neck.bn._mean.dtype == head.neck.bn._variance.dtype == paddle.float32
    assert trainer.losses["person"](out, paddle.arange(8))["loss"].dtype == paddle.float32


def test_o2_casts_all_but_the_heads_and_keeps_fp32_master_weights(make_config, gpu_amp, monkeypatch):
    calls, real = [], inspect.signature(paddle.amp.decorate)

    def decorate(**kw):
        # what paddle.amp.decorate does on a GPU (on a CPU it returns at once)
        real.bind(**kw)
        auto_cast = sys.modules["paddle.amp.auto_cast"]
        auto_cast.amp_initialize(models=[kw["models"]], dtype=kw["dtype"], excluded_layers=kw["excluded_layers"])
        auto_cast._set_multi_precision(kw["optimizers"], kw["master_weight"])
        calls.append((kw["level"], kw["dtype"], kw["save_dtype"]))
        return kw["models"], kw["optimizers"]
    monkeypatch.setattr(paddle.amp, "decorate", decorate)
    trainer = Trainer(make_config("Global.amp.enable=true", "Global.amp.level=O2"))
    assert calls == [("O2", "bfloat16", "float32")] and trainer.optimizer._multi_precision
    model = trainer.model
    assert model.backbone.blocks[0].attn.qkv.weight.dtype == paddle.bfloat16
    heads = dict(model.heads.named_parameters(), **dict(model.heads.named_buffers()))
    assert any(k.endswith("bn._mean") for k in heads)
    assert {k: v.dtype for k, v in heads.items() if v.dtype != paddle.float32} == {}


def test_float16_resume_restores_the_loss_scaler(make_config, gpu_amp, tmp_path):
    amp = ["Global.amp.enable=true", "Global.amp.dtype=float16"]
    first = Trainer(make_config(*amp, output_dir=tmp_path / "a"))
    scaler = first.amp.scaler
    assert scaler is not None and scaler.is_enable()
    batch = next(iter(first.loader))
    for it in (1, 2):
        first.train_step(batch, it)
    scaler._scale = paddle.to_tensor(np.array([512.0], np.float32))  # as after overflows
    scaler._decr_count = 1
    saved = scaler.state_dict()
    assert saved["incr_count"] == 2
    first.save(2)
    resume = f"Global.checkpoints={tmp_path / 'a' / 'latest'}"
    back = Trainer(make_config(*amp, resume, output_dir=tmp_path / "a"))
    got = back.amp.scaler.state_dict()
    assert float(got["scale"][0]) == 512.0 and got["incr_count"] == 2 and got["decr_count"] == 1
    assert {k: v for k, v in got.items() if k != "scale"} == {k: v for k, v in saved.items() if k != "scale"}
    assert read_states(str(tmp_path / "a" / "latest"))["files"][".pdopt"]  # the scaler is in the checked .pdopt
    # a checkpoint saved without float16 AMP leaves the scaler at its initial scale
    plain = Trainer(make_config(output_dir=tmp_path / "b"))
    plain.save(0)
    fresh = Trainer(make_config(*amp, f"Global.checkpoints={tmp_path / 'b' / 'latest'}", output_dir=tmp_path / "b"))
    assert float(fresh.amp.scaler.state_dict()["scale"][0]) == 2.0 ** 15
    assert "holds no loss-scaler state" in (tmp_path / "b" / "train.log").read_text()


def test_fp32_forward_keeps_names_and_outputs():
    paddle.seed(0)
    layer = paddle.nn.Linear(4, 3)
    x = paddle.randn([2, 4])
    before, names = layer(x).numpy(), [n for n, _ in layer.named_parameters()]
    fp32_forward(layer)
    np.testing.assert_array_equal(layer(x).numpy(), before)
    assert [n for n, _ in layer.named_parameters()] == names and layer(x.astype("bfloat16")).dtype == paddle.float32


def test_an_o2_checkpoint_resumed_without_amp_takes_the_master_weights():
    paddle.seed(0)
    model = paddle.nn.Linear(4, 3)
    opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    opt._master_weights = {model.weight.name: paddle.full([4, 3], 0.5)}  # as loaded from the .pdopt
    bias = model.bias.numpy()
    MixedPrecision({"enable": False, "dtype": "bfloat16", "level": "O1"}, "cpu").prepare(model, opt)
    assert (model.weight.numpy() == 0.5).all() and (model.bias.numpy() == bias).all()
    assert opt._master_weights == {} and "master_weights" not in opt.state_dict()
