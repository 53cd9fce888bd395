"""Inference latency of the same model: dygraph vs Paddle Inference vs ONNX Runtime, one run.

python benchmark/infer_speed.py [--repeats 10] [--threads 2] [--no-subnets] [--no-int8] [--vitb-size 256x128]
Every side gets the same number of CPU threads (default: all cores this process may use).
Paddle's dygraph runs its math on ONE thread unless told otherwise (measured: one busy thread),
so it is given ``--threads`` through paddle.base.core.set_num_threads (Paddle 3.3.1 has no public
call for it); each row reports how many threads actually did the work, and also times dygraph on
one thread (Paddle's default) with the ratios against it.
Paddle Inference runs twice: BEFORE, the settings ppufo used before issue 29 (oneDNN, cache of 10
shapes, IR passes on, Paddle's per-tensor garbage collection, the SDPA export), and AFTER,
FeaturePredictor's defaults now (the packed-attention export with its fused attention kernel,
dead tensors freed in 64 MB batches, and for models under 64 MB of weights oneDNN off and no
freeing; what each setting does alone is benchmark/infer_settings.py). ONNX Runtime runs the packed export (the default one).
Paddle Inference int8 (unless --no-int8): the same model quantised as ppufo-quantize does
(slim.quantize.quantize_task: hist, per-tensor weights, int8_ops [fc]) but calibrated on random
images like the timed ones (the int8 kernels, so the speed, do not depend on the scales), run by
FeaturePredictor on the same threads in the same rounds; each row gives its speed-up over AFTER
(fp32, ppufo's defaults) and the feature cosine to it. The models are untrained, so that cosine
only flags a broken int8 run; a trained model's accuracy cost is ppufo-quantize's report's.
Calls are interleaved (dygraph, Paddle Inference, ONNX Runtime, dygraph, ..., in a fresh random
order each round) so background load and position hit every side alike; on the quickstart rows each timed call follows an untimed call of the same
side, which keeps one runtime's spinning worker threads out of the next one's timing. Ratios use
the best of the timed runs after warm-up (on a shared machine the best run is the one that got its
cores; medians are printed beside them).
One line per model gives both runtimes' ms and the GFLOP/s they achieve against this machine's
fp32 matmul on the same threads (Paddle, 2048x2048, measured in this run).
Last line: the worst Paddle Inference (AFTER) / ONNX Runtime time ratio over the models and
batch sizes, ratio first (above 1: Paddle Inference is slower), then int8's speed-up over fp32
Paddle Inference on the last model at its largest batch.
"""
import argparse
import glob
import os
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle

from ppufo.arch import build_model
from ppufo.engine.exporter import export_task
from ppufo.utils.config import load_config
from ppufo.inference.predictor import FeaturePredictor, OnnxPredictor
from ppufo.slim.quantize import quantize_task
from ppufo.slim.report import cosine


def vitb_row(h=224, w=224):
    """(label, overrides) of the ViT-B/16 row at h x w (256x128: the ReID geometry)."""
    return (f"ViT-B/16 {h}" if h == w else f"ViT-B/16 {h}x{w}"), [
        f"Global.image_shape=[3,{h},{w}]", "Arch.Backbone.name=ViT_base_patch16", "Arch.Backbone.depth=12",
        "DataLoader.Train.transforms=[]"]


# row name -> (label, quickstart.yaml overrides)
ROWS = {"qs": ("quickstart ViT-Ti (6 blocks, 64x64)", []), "vitb": vitb_row()}
CALIBRATION_IMAGES = 16  # random, seed 1 (the timed batches are seed 0)
# Paddle Inference as ppufo ran it before issue 29 (on the SDPA export)
BEFORE = dict(enable_mkldnn=True, mkldnn_cache_capacity=10, ir_optim=True, gc_mb=0, small_model_mb=0)
_EXPORTS = {}


def export_pair(overrides, work):
    """The model of quickstart.yaml + ``overrides`` (seed 0, untrained), exported twice, SDPA and
    packed attention, each also converted to ONNX (once per overrides in a run). Returns (sdpa
    dir, packed dir, ref(x, threads) -> dygraph features, image shape, forward FLOPs per image)."""
    key = tuple(overrides)
    if key not in _EXPORTS:
        from ppufo.inference.onnx_export import export_onnx
        cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), list(overrides))
        paddle.seed(0)
        model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
        model.eval()
        dirs = []
        for packed in (False, True):
            cfg["Export"]["packed_attention"] = packed
            d = tempfile.mkdtemp(dir=work)
            export_task(model, "person", cfg, d)
            export_onnx(d)
            dirs.append(d)

        def ref(x, threads):
            paddle.base.core.set_num_threads(threads)
            with paddle.no_grad():
                return model.embed(paddle.to_tensor(x), "person").numpy()

        shape = cfg["Global"]["image_shape"]
        _EXPORTS[key] = (*dirs, ref, shape, model.backbone.forward_flops(shape[1:]), model, cfg)
    return _EXPORTS[key][:5]


def export_int8(overrides, work):
    """The int8 folder of export_pair(overrides)'s model, written by ppufo-quantize's own
    quantize_task on CALIBRATION_IMAGES random images (see the module docstring)."""
    export_pair(overrides, work)
    model, cfg = _EXPORTS[tuple(overrides)][5:]
    c, h, w = cfg["Global"]["image_shape"]
    images = np.random.default_rng(1).standard_normal((CALIBRATION_IMAGES, c, h, w)).astype("float32")
    return quantize_task(model, cfg, "person", os.path.join(tempfile.mkdtemp(dir=work), "person"), images)[0]


def thread_ticks():
    """CPU ticks used so far by each thread of this process (Linux /proc; {} elsewhere)."""
    out = {}
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[path.split("/")[4]] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


class Side:
    def __init__(self, name, fn):
        self.name, self.fn, self.times, self.ticks = name, fn, [], {}

    def timed_call(self, x):
        before = thread_ticks()
        t = time.perf_counter()
        self.fn(x)
        self.times.append(time.perf_counter() - t)
        for k, v in thread_ticks().items():
            self.ticks[k] = self.ticks.get(k, 0) + v - before.get(k, 0)

    def threads(self):
        """Threads that did at least a quarter of the busiest thread's work ('?' without /proc)."""
        top = max(self.ticks.values(), default=0)
        return sum(v >= top / 4 for v in self.ticks.values()) if top >= 8 else "?"


def measure(sides, x, repeats, warmup=3, lead_in=False, seed=0):
    """Best and median seconds of each side over ``repeats`` interleaved rounds, each round in a
    fresh random order (a fixed order gave the side after ONNX Runtime 10% slower times, measured).
    ``lead_in``: an untimed call of the same side before each timed one (see the module docstring)."""
    for s in sides:
        for _ in range(warmup):  # oneDNN / ORT build their kernels for a new shape on the first calls
            s.fn(x)
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        for i in rng.permutation(len(sides)):
            s = sides[i]
            if lead_in:
                s.fn(x)
            s.timed_call(x)
    return [float(np.min(s.times)) for s in sides], [float(np.median(s.times)) for s in sides]


def compare(row, batches, repeats, threads, work, peak, int8=True):
    """Rows of one model; returns {batch: (Paddle Inference AFTER ms, ONNX Runtime ms, int8 ms or
    None, int8's feature cosine to AFTER or None)}."""
    label, overrides = ROWS[row]
    sdpa, packed, ref, (c, h, w), flops = export_pair(overrides, work)
    model = _EXPORTS[tuple(overrides)][5]
    before = FeaturePredictor(sdpa, cpu_threads=threads, max_batch_size=max(batches), fuse_attention=False, **BEFORE)
    after = FeaturePredictor(packed, cpu_threads=threads, max_batch_size=max(batches))
    onnx = OnnxPredictor(packed, cpu_threads=threads)
    q8 = FeaturePredictor(export_int8(overrides, work), cpu_threads=threads, max_batch_size=max(batches)) \
        if int8 else None
    out = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, c, h, w)).astype("float32")

        def dygraph_on(n):
            def run(a):
                # a Paddle Inference run leaves the math library at one thread (measured): set it per call
                paddle.base.core.set_num_threads(n)
                with paddle.no_grad():
                    return model.embed(paddle.to_tensor(a), "person").numpy()
            return run

        r = ref(x, threads)
        # dygraph on 1 thread is Paddle's default, and the faster choice for tiny models
        sides = [Side("dygraph", dygraph_on(threads)), Side("dygraph 1-thread", dygraph_on(1)),
                 Side("Paddle Inference BEFORE", before), Side("Paddle Inference AFTER", after),
                 Side("ONNX Runtime", onnx)] + ([Side("Paddle Inference int8", q8)] if q8 else [])
        diffs = [np.abs(s.fn(x) - r).max() for s in sides[2:5]]
        cos = cosine(q8(x), after(x)) if q8 else None
        times, medians = measure(sides, x, repeats, lead_in=row == "qs")
        cols = [f"{s.name} {t * 1e3:.1f} ms (median {m * 1e3:.1f}) [{s.threads()} thr]"
                for s, t, m in zip(sides, times, medians)]
        speedups = [f"{s.name} {times[0] / t:.2f}x ({times[1] / t:.2f}x vs 1-thread)" for s, t in
                    zip(sides[2:], times[2:])]
        print(f"{label} b{b}: " + ", ".join(cols) + "; vs dygraph: " + ", ".join(speedups)
              + "; Paddle Inference / ONNX Runtime: BEFORE " f"{times[2] / times[4]:.2f}x, AFTER "
              f"{times[3] / times[4]:.2f}x; max |diff| vs dygraph " + " / ".join(f"{v:.1e}" for v in diffs)
              + (f"; int8 {times[3] / times[5]:.2f}x the speed of fp32 Paddle Inference (AFTER), feature cosine "
                 f"mean {cos['mean']:.4f} / min {cos['min']:.4f}" if q8 else ""), flush=True)
        out[b] = (times[3] * 1e3, times[4] * 1e3, times[5] * 1e3 if q8 else None, cos)
    per_image = [f"b{b}: Paddle Inference {pi:.1f} ms ({flops * b / pi / 1e6:.1f} GFLOP/s), ONNX Runtime "
                 f"{ort:.1f} ms ({flops * b / ort / 1e6:.1f} GFLOP/s)" + (f", int8 {q:.1f} ms" if q else "")
                 for b, (pi, ort, q, _) in out.items()]
    print(f"{label} ({flops / 1e9:.2f} GFLOP per image): " + "; ".join(per_image)
          + f"; all-core fp32 matmul {peak:.1f} GFLOP/s", flush=True)
    return out


def compare_subnets(repeats, threads, work):
    """Full supernet path vs extracted subnets, each exported to Paddle Inference, on the
    reference's ViT-B/16 supernet (depth 10-12, heads 10-12, FFN 0.75-1.0) at 224, batch 1."""
    from ppufo.nas.extract import extract
    cfg = load_config(os.path.join(ROOT, "configs", "supernet_quickstart.yaml"), [
        "Global.image_shape=[3,224,224]", "DataLoader.Train.transforms=[]", "Arch.Backbone.embed_dim=768",
        "Arch.Backbone.depth=12", "Arch.Backbone.num_heads=12", "Arch.Backbone.depths=[10,11,12]",
        "Arch.Backbone.heads=[10,11,12]", "Arch.Backbone.ffn_ratios=[0.75,0.875,1.0]"])
    paddle.seed(0)
    supernet = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    supernet.eval()
    sp = supernet.space
    subnets = {"full path (largest, mix)": sp.largest(), "ViT-B (task path, full)": sp.uniform(12, 12, "task", 1.0),
               "smallest subnet": sp.smallest()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype("float32")

    def supernet_path(a):
        paddle.base.core.set_num_threads(threads)
        with paddle.no_grad():
            return supernet.embed(paddle.to_tensor(a), "person").numpy()

    supernet.set_subnets(sp.largest())
    sides, diffs = [Side("supernet full path, dygraph", supernet_path)], []
    for name, sub in subnets.items():
        plain_cfg, plain = extract(cfg, supernet, ["person"], sub)
        d = tempfile.mkdtemp(dir=work)
        export_task(plain, "person", plain_cfg, d)
        pred = FeaturePredictor(d, cpu_threads=threads, max_batch_size=1)  # the defaults (AFTER)
        supernet.set_subnets(sub)
        diffs.append(float(np.abs(pred(x) - supernet_path(x)).max()))
        sides.append(Side(f"{name} {sp.params(sub) / 1e6:.1f}M", pred))
    supernet.set_subnets(sp.largest())
    times, _ = measure(sides, x, repeats)
    print("ViT-B/16 supernet b1: " + ", ".join(f"{s.name} {t * 1e3:.1f} ms" for s, t in zip(sides, times))
          + f"; max |diff| vs the supernet path {max(diffs):.1e}")
    print(f"extracted subnets (Paddle Inference): smallest {times[1] / times[3]:.2f}x faster than the full path, "
          f"{times[2] / times[3]:.2f}x faster than ViT-B; full path {times[0] / times[1]:.2f}x faster than "
          f"running it in the supernet (dygraph)", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    p.add_argument("--no-subnets", action="store_true", help="skip the extracted-subnet rows")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 side (quantising takes minutes at ViT-B)")
    p.add_argument("--vitb-size", default="224x224", help="the ViT-B/16 row's input HxW (256x128: the ReID geometry)")
    a = p.parse_args()
    ROWS["vitb"] = vitb_row(*map(int, a.vitb_size.split("x")))
    paddle.set_device("cpu")
    import runpy  # the sibling script, without editing the import path (tests/unit/test_layers.py)
    here = os.path.dirname(os.path.abspath(__file__))
    peak = runpy.run_path(os.path.join(here, "train_throughput.py"))["matmul_gflops"](a.threads)["paddle"]
    ratios, int8 = {}, None
    with tempfile.TemporaryDirectory(prefix="ppufo_infer_speed_") as work:  # the exported models
        for row in ROWS:
            for b, (pi, ort, q, cos) in compare(row, (1, 8), a.repeats, a.threads, work, peak, not a.no_int8).items():
                ratios[(ROWS[row][0], b)] = pi / ort
                int8 = (pi / q, ROWS[row][0], b, cos) if q else None
        if not a.no_subnets:
            compare_subnets(a.repeats, a.threads, work)
    (label, b), worst = max(ratios.items(), key=lambda kv: kv[1])
    print(f"{worst:.2f}x Paddle Inference / ONNX Runtime time at worst ({label}, batch {b}; ppufo's defaults, "
          f"{a.threads} threads each, over {len(ratios)} model/batch rows)"
          + (f"; int8 {int8[0]:.2f}x the speed of fp32 Paddle Inference at {int8[1]} b{int8[2]} (feature cosine "
             f"{int8[3]['mean']:.4f}, untrained weights)" if int8 else ""))


if __name__ == "__main__":
    main()
