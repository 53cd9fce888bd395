"""A chip's latency table (latency_table.py) measured on probes, or estimated for a chip not at hand.

A probe is the exported model of the supernet's geometry with no blocks (the stem), or the stem
plus ``copies`` stacked copies of one op (an attention of n heads, or an FFN of hidden width n);
an op's entry is (probe - stem) / copies, which cancels the per-run overhead. All probes are timed
together with the chip's runtime, interleaved (latency.time_model_dirs).

A chip that runs int8 models (chips.QUANTIZED_CHIPS) times quantised probes: they are traced and
quantised in a legacy-mode child process (int8_probes.py, as ppufo-quantize does a task model),
and its predictor refuses a float one, so a float probe can never be timed under its name.
"""
import itertools
import os
import tempfile

from ..chips import QUANTIZED_CHIPS
from .latency import temp_dirs, time_model_dirs
from .latency_table import geometry, required_entries

# int8 probes are calibrated on random images: the kernels, hence the latency, do not depend on the
# scales, and abs_max is PostTrainingQuantization's quickest algorithm
PROBE_CALIBRATION = {"images": 8, "algo": "abs_max", "seed": 0}


def supernet_space(config):
    """The search space of the config's supernet (Arch.Backbone ViTSupernet)."""
    from ..arch.backbone import build_backbone
    g = config["Global"]
    return build_backbone(dict(config["Arch"]["Backbone"]), img_size=g["image_shape"][1:],
                          tasks=list(config["Tasks"])).space


def probe_entries(space):
    """[(op, width)] the table needs, in the order the probes after the stem are built."""
    need = required_entries(space)
    return [("attention", n) for n in need["attention"]] + [("ffn", n) for n in need["ffn"]]


def probe_layers(config, space, task, copies):
    """The probes, built one at a time (a generator): the stem, then one per probe_entries item.
    Seeded, so a child process building them again gets the same weights."""
    import paddle
    import paddle.nn as nn

    from ..arch.backbone.vit import Attention, Mlp
    from ..arch.multitask import build_model
    from .extract import extracted_config
    paddle.seed(0)
    empty = space.uniform(space.depths[0], space.heads[0], space.paths[0], space.ratios[0])
    cfg = extracted_config(config, [task], empty, space)
    cfg["Arch"]["Backbone"].update(depth=0, block_heads=None, block_mlp_hidden=None)
    model = build_model(cfg, {task: 2})
    model.eval()
    eps = cfg["Arch"]["Backbone"].get("epsilon", 1e-6)

    def ops(op, n):
        if op == "attention":
            return [_residual(nn.LayerNorm(space.embed_dim, epsilon=eps),
                              Attention(space.embed_dim, n, space.qkv_bias, head_dim=space.head_dim))
                    for _ in range(copies)]
        return [_residual(nn.LayerNorm(space.embed_dim, epsilon=eps), Mlp(space.embed_dim, n)) for _ in range(copies)]

    for layers in itertools.chain([[]], (ops(op, n) for op, n in probe_entries(space))):
        probe = _probe(model, task, layers)
        probe.eval()
        yield probe


def _probe(model, task, ops):
    """A feature model running ``ops`` (token -> token layers) between the depth-0 ViT's
    embedding and its final norm + neck: the exported model minus its blocks, plus ``ops``."""
    import paddle.nn as nn
    import paddle.nn.functional as F

    class Probe(nn.Layer):
        def __init__(self):
            super().__init__()
            self.vit, self.neck, self.ops = model.backbone, model.heads[task].neck, nn.LayerList(ops)

        def forward(self, x):
            t = self.vit.embed_tokens(x)
            for op in self.ops:
                t = op(t)
            return F.normalize(self.neck(self.vit.norm(t)[:, 0]), axis=1)

    return Probe()


def _residual(norm, layer):
    import paddle.nn as nn

    class Residual(nn.Layer):
        def __init__(self):
            super().__init__()
            self.norm, self.layer = norm, layer

        def forward(self, t):
            return t + self.layer(self.norm(t))

    return Residual()


def export_float_probes(config, space, task, copies, dirs, bar=None):
    """Each probe jit-saved (PIR) into the matching folder of ``dirs``, as exported models are."""
    from ..engine.exporter import save_inference
    c, h, w = config["Global"]["image_shape"]
    for probe, d in zip(probe_layers(config, space, task, copies), dirs):
        save_inference(probe, [c, h, w], os.path.join(d, "inference"))
        with open(os.path.join(d, "inference.yml"), "w") as f:
            f.write(f"image_shape: [{c}, {h}, {w}]\n")
        if bar:
            bar.update()


def export_int8_probes(config, task, copies, dirs, bar=None):
    """Each probe quantised (Quant.int8_ops, PROBE_CALIBRATION) into the matching folder of ``dirs``,
    by int8_probes.py in a legacy-mode child process."""
    from ..slim.quantize import run_job
    from ..utils.config import dump_config
    with tempfile.TemporaryDirectory(prefix="ppufo_int8_probes_") as work:
        dump_config(config, os.path.join(work, "config.yaml"))
        run_job({"config": os.path.join(work, "config.yaml"), "task": task, "copies": copies, "dirs": list(dirs),
                 "work_dir": work, "int8_ops": list(config["Quant"]["int8_ops"]), **PROBE_CALIBRATION},
                work, module="ppufo.nas.int8_probes")
    if bar:
        bar.update(len(dirs))


def measure_table(config, space, task, chip, batch_size, warmup, repeats, cpu_threads=1, copies=4,
                  timer="wall", rounds=1, quantile=0.5, progress=None):
    """Table entries timed with the chip's runtime: the stem alone, and each op as the extra time
    of ``copies`` stacked copies over the stem. All probes are timed together, interleaved, so a
    drift of the machine does not leak into the differences."""
    jobs = probe_entries(space)
    int8 = chip in QUANTIZED_CHIPS
    bar = progress(total=len(jobs) + 1, desc=f"{'quantising' if int8 else 'exporting'} latency probes for "
                                             f"{chip}") if progress else None
    with temp_dirs() as dirs:
        dirs += [tempfile.mkdtemp(prefix="ppufo_table_") for _ in range(len(jobs) + 1)]
        if int8:
            export_int8_probes(config, task, copies, dirs, bar)
        else:
            export_float_probes(config, space, task, copies, dirs, bar)
        if bar:
            bar.close()
        stem, *timed = time_model_dirs(dirs, chip, batch_size, warmup, repeats, cpu_threads, timer, rounds, quantile)
    out = {"stem": round(stem, 4), "attention": {}, "ffn": {}}
    for (op, n), ms in zip(jobs, timed):
        # floor at 1 us: on a noisy machine a tiny op can time below zero after the subtraction
        out[op][str(n)] = round(max((ms - stem) / copies, 1e-3), 4)
    return out


def estimate_table(space, image_shape, batch_size, gflops, overhead_ms):
    """Placeholder entries for a chip not at hand: FLOPs / assumed throughput + a per-kernel
    launch overhead. Not a measurement; the table's provenance says so."""
    from ..arch.backbone.vit import vit_flops
    c, h, w = image_shape
    n = (h // space.patch_size) * (w // space.patch_size)

    def ms(blocks):
        return batch_size * vit_flops(space.embed_dim, space.patch_size, n, blocks, c) / (gflops * 1e6)

    base = ms([])
    need = required_entries(space)
    return {"stem": round(base + 4 * overhead_ms, 4),
            "attention": {str(k): round(ms([(k * space.head_dim, 0)]) - base + 4 * overhead_ms, 4)
                          for k in need["attention"]},
            "ffn": {str(m): round(ms([(0, m)]) - base + 2 * overhead_ms, 4) for m in need["ffn"]}}


def table_entry(entries, space, image_shape, batch_size, provenance):
    return {"geometry": geometry(space, image_shape, batch_size), "provenance": provenance, **entries}
