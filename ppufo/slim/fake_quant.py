"""Int8 simulated in dygraph ("fake quant"): a task model's features as its ppufo-quantize int8
model gives them, without exporting, quantising or running a predictor. The chip search scores
quantised candidate subnets with it (ppufo.nas.accuracy).

What is simulated is what Paddle Inference 3.3.1 runs for Quant.int8_ops [fc], read off oneDNN's
log of the int8 model (docs/notes/chip_search.md, 2026-12-06: quantised candidates):
- every Linear of a ViT block is an s8 inner product: its input rounded to int8 at a threshold
  calibrated on the calibration images, per Quant.algo as Paddle's PostTrainingQuantization
  computes it (abs_max, avg, hist, KL); its weight, rounded per tensor by the quantisation
  (slim.quantize.WEIGHT_QUANTIZE), rounded again per output channel by the int8 pass; its output
  rounded to int8 at its own calibrated threshold (fc1's after the GELU fused into it, which is
  fc2's input);
- other Linears (the neck's) stay float, with the per-tensor-rounded weights the quantised program holds;
- the attention's activation matmuls stay float.
"""
import contextlib

import numpy as np
import paddle
import paddle.nn as nn

from ..utils.errors import ConfigError

ALGOS = ("abs_max", "avg", "hist", "KL")
HIST_BINS, HIST_PERCENT = 2048, 0.99999  # PostTrainingQuantization's defaults
LEVELS = 127.0  # signed 8 bit, symmetric


def quant_dequant(x, threshold):
    """``x`` rounded onto the 255 int8 levels of [-threshold, threshold] and back."""
    step = max(float(threshold), 1e-30) / LEVELS
    return paddle.clip(paddle.round(x / step), -LEVELS, LEVELS) * step


class ActivationStats:
    """The calibration statistics of one activation (a Linear's input or output), batch by batch."""

    def __init__(self):
        self.abs_max, self.abs_min, self.batch_avgs, self.hist, self.edges = 0.0, np.inf, [], None, None

    def first_pass(self, x):
        a = np.abs(x)
        self.abs_max, self.abs_min = max(self.abs_max, float(a.max())), min(self.abs_min, float(a.min()))
        self.batch_avgs.append(float(a.reshape(a.shape[0], -1).max(axis=1).mean()))

    def second_pass(self, x):
        if self.hist is None:
            self.hist, self.edges = np.histogram([], bins=HIST_BINS, range=(self.abs_min, self.abs_max))
        self.hist += np.histogram(np.abs(x), bins=self.edges)[0]

    def threshold(self, algo):
        if algo == "abs_max":
            return self.abs_max
        if algo == "avg":
            return float(np.mean(self.batch_avgs))
        width = self.edges[1] - self.edges[0]
        if algo == "KL":
            from paddle.static.quantization.cal_kl_threshold import cal_kl_threshold
            return float(cal_kl_threshold(self.hist, width, 8))
        share = np.cumsum(self.hist / self.hist.sum())  # hist: the HIST_PERCENT quantile, as Paddle reads it
        return float((np.argmax(share >= HIST_PERCENT) + 1 - 0.5) * width)


def check_algo(algo, int8_ops):
    if algo not in ALGOS:
        raise ConfigError(f"Quant.algo={algo}: the int8 simulation (fake quant) computes {list(ALGOS)}")
    if list(int8_ops) != ["fc"]:
        raise ConfigError(f"Quant.int8_ops={list(int8_ops)}: the int8 simulation (fake quant) runs int8 "
                          f"what [fc] runs (every Linear); other op lists are measured only on the exported "
                          f"int8 model (ppufo-quantize)")


def linear_roles(model):
    """(Linears run int8, the Mlp.fc1 among them whose output is rounded as fc2's input)."""
    from ..arch.backbone.vit import Block
    blocks = [m for m in model.sublayers() if isinstance(m, Block)]
    if not blocks:
        raise ConfigError(f"fake quant: {type(model).__name__} has no ViT block (ppufo.arch.backbone.vit.Block); "
                          f"the int8 simulation follows Paddle Inference's int8 ViT")
    int8 = [l for b in blocks for l in b.sublayers() if isinstance(l, nn.Linear)]
    return int8, {b.mlp.fc1 for b in blocks}


@contextlib.contextmanager
def _hooks(pre, post):
    """Forward pre-hooks {layer: fn(layer, inputs)} and post-hooks {layer: fn(layer, inputs, output)}."""
    handles = [l.register_forward_pre_hook(f) for l, f in pre.items()]
    handles += [l.register_forward_post_hook(f) for l, f in post.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@paddle.no_grad()
def calibrate(model, task, images, algo, batch_size):
    """(thresholds {(Linear, "in" | "out"): float} of what runs int8, every Linear ``model.embed(., task)``
    ran) from ``images`` ([n, C, H, W] float32) in batches; two passes for hist and KL (range, then histogram)."""
    int8, gelu_fused = linear_roles(model)
    linears = [m for m in model.sublayers() if isinstance(m, nn.Linear)]
    stats, ran = {}, set()

    def pass_over(name):
        def seen(layer, inputs):
            ran.add(layer)
            if layer in int8:
                getattr(stats.setdefault((layer, "in"), ActivationStats()), name)(inputs[0].numpy())

        def out(layer, inputs, output):
            getattr(stats.setdefault((layer, "out"), ActivationStats()), name)(output.numpy())
        with _hooks({l: seen for l in linears}, {l: out for l in int8 if l not in gelu_fused}):
            for i in range(0, len(images), batch_size):
                model.embed(paddle.to_tensor(images[i:i + batch_size]), task)
    was_training = model.training
    model.eval()
    try:
        pass_over("first_pass")
        if algo in ("hist", "KL"):
            pass_over("second_pass")
    finally:
        model.train(was_training)
    return {k: s.threshold(algo) for k, s in stats.items()}, [l for l in linears if l in ran]


def int8_weight(w, per_channel):
    """``w`` [in, out] rounded per tensor, then, where the int8 pass re-quantises it, per output channel."""
    w = quant_dequant(paddle.to_tensor(w), float(np.abs(w).max()))
    if per_channel:
        step = paddle.clip(w.abs().max(axis=0, keepdim=True), min=1e-30) / LEVELS
        w = paddle.round(w / step) * step
    return w


@contextlib.contextmanager
def fake_quantized(model, task, images, algo="hist", batch_size=16, int8_ops=("fc",)):
    """Within the block ``model`` computes ``task``'s features in simulated int8 (the module doc), with
    thresholds calibrated on ``images``. The float weights are put back on exit."""
    check_algo(algo, int8_ops)
    thresholds, ran = calibrate(model, task, images, algo, int(batch_size))
    saved = {layer: layer.weight.numpy() for layer in ran}
    for layer, w in saved.items():
        layer.weight.set_value(int8_weight(w, (layer, "in") in thresholds))

    def round_in(layer, inputs):
        return (quant_dequant(inputs[0], thresholds[(layer, "in")]),)

    def round_out(layer, inputs, output):
        return quant_dequant(output, thresholds[(layer, "out")])
    try:
        with _hooks({l: round_in for l in ran if (l, "in") in thresholds},
                    {l: round_out for l in ran if (l, "out") in thresholds}):
            yield thresholds
    finally:
        for layer, w in saved.items():
            layer.weight.set_value(w)


class Int8Simulation:
    """``sim(model, task)``: the fake_quantized context of a task model, calibrated as ppufo-quantize
    calibrates it (Quant.num_images training images of the task drawn with Quant.seed, Quant.algo,
    Quant.batch_size); the images are read once."""

    def __init__(self, config, task):
        from ..engine.calibrate import task_images
        q = config["Quant"]
        check_algo(q["algo"], q["int8_ops"])
        self.task, self.algo, self.batch_size, self.int8_ops = task, q["algo"], q["batch_size"], q["int8_ops"]
        self.seed = q["seed"]
        self.images = task_images(config, task, q["num_images"], q["seed"])

    @property
    def context(self):
        """What a simulated accuracy depends on (a measurement cache compares it)."""
        from .quantize import WEIGHT_QUANTIZE
        return {"simulation": "fake_quant v1", "images": len(self.images), "seed": self.seed, "algo": self.algo,
                "weights": WEIGHT_QUANTIZE, "int8_ops": list(self.int8_ops)}

    def __call__(self, model, task):
        if task != self.task:
            raise ConfigError(f"Int8Simulation of {self.task} asked to simulate task {task}")
        return fake_quantized(model, task, self.images, self.algo, self.batch_size, self.int8_ops)
