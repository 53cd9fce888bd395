"""Mixed precision from Global.amp: autocast, O2 weights, loss scaling and its checkpoint state.

GPU only: Paddle's autocast and GradScaler do nothing on a CPU, so there the section is ignored
with a warning. bfloat16 needs no loss scaling; float16 scales the loss with a GradScaler whose
state travels in the checkpoint. O2 casts the weights to the low precision and the optimizer
keeps fp32 master weights. Whatever the level, the task heads (BN neck with its statistics,
margin classifier) run in fp32 with autocast off, and the trainer computes the losses outside
autocast: a matmul under autocast runs in low precision even on fp32 inputs, so casting inside
the heads would not be enough.

Evaluation, BN-neck calibration and precise BN run under the same autocast as training
(eval_autocast: the backbone only; MultiTaskModel.embed and the calibrations run the neck in fp32
and metrics are computed in numpy fp32), not in fp32 beside a low-precision training step.
Global.amp.eval_fp32 forces fp32 under O1; O2 has no fp32 evaluation (its weights are low precision).
"""
import contextlib

import paddle

from ..utils.errors import ConfigError
from ..utils.paddle_internals import pop_master_weights

LOW = ("float16", "bfloat16")


def available(device):
    return device.startswith("gpu")


def _fp32(x):
    return x.astype("float32") if isinstance(x, paddle.Tensor) and x.dtype in (
        paddle.float16, paddle.bfloat16) else x


def fp32_forward(layer):
    """Make ``layer`` run in fp32 with autocast off whatever its caller's autocast (low-precision
    inputs are cast up). Only the instance's forward changes: parameter names stay."""
    inner = layer.forward

    def forward(*args, **kwargs):
        with paddle.amp.auto_cast(enable=False):
            return inner(*map(_fp32, args), **{k: _fp32(v) for k, v in kwargs.items()})
    forward.fp32 = True
    layer.forward = forward
    return layer


class MixedPrecision:
    """Global.amp for ``device``; ``enable`` is False wherever AMP cannot run."""

    def __init__(self, cfg, device, log=None):
        if cfg["enable"] and cfg["level"] == "O2" and cfg.get("eval_fp32"):
            # checked on every device, so a config that cannot run on the GPU fails on a CPU too
            raise ConfigError(f"Global.amp.eval_fp32 with level O2: O2 keeps the weights in {cfg['dtype']}, "
                              f"so evaluation cannot run in fp32; use level O1, or evaluate a saved "
                              f"checkpoint (fp32 .pdparams) with tools/eval.py")
        self.enable = bool(cfg["enable"]) and available(device)
        if cfg["enable"] and not self.enable and log is not None:
            log.warning("Global.amp is ignored on %s (mixed precision needs a GPU)", device)
        self.dtype, self.level = cfg["dtype"], cfg["level"]
        self.eval_fp32 = bool(cfg.get("eval_fp32", False))
        self.scaler = None
        if self.enable and self.dtype == "float16":
            self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15)

    def autocast(self):
        if not self.enable:
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(enable=True, dtype=self.dtype, level=self.level)

    def eval_autocast(self):
        """The context of evaluation and calibration: training's autocast, or none (fp32) with
        Global.amp.eval_fp32 (O1 only: O2's low-precision weights need autocast)."""
        return contextlib.nullcontext() if self.eval_fp32 else self.autocast()

    def prepare(self, model, optimizer):
        """Heads in fp32; under O2 every other weight in low precision and fp32 master weights in
        ``optimizer``. Call after loading weights and optimizer state (the master weights of a
        checkpoint are then used as they are) and before wrapping the model in DataParallel."""
        if not (self.enable and self.level == "O2"):
            # an O2 checkpoint resumed without O2: its fp32 master weights are the exact weights
            # (popped: else saved again, stale, with every checkpoint)
            masters = pop_master_weights(optimizer)
            for p in model.parameters():
                if p.name in masters:
                    p.set_value(masters[p.name].astype(p.dtype))
        if not self.enable:
            return
        for head in model.heads.values():
            fp32_forward(head.neck)
            if head.classifier is not None:
                fp32_forward(head.classifier)
        if self.level == "O2":
            # save_dtype: .pdparams stay fp32, loadable by eval and export as before
            paddle.amp.decorate(models=model, optimizers=optimizer, level="O2", dtype=self.dtype,
                                master_weight=True, save_dtype="float32", excluded_layers=[model.heads])

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer):
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()
