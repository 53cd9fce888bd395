"""Paddle Inference settings on this CPU, each on its own against the settings before issue 29, in one run.

python benchmark/infer_settings.py [--repeats 20] [--threads 2] [--rows qs1,qs8,vitb1]

Rows (model, batch): qs1 / qs8 = the quickstart ViT-Ti (6 blocks, 64x64) at batch 1 / 8, vitb1 /
vitb8 = ViT-B/16 at 224 (random weights: speed and equality do not depend on training).
Each side is one Paddle Inference predictor built like ``FeaturePredictor`` with the settings
ppufo used before issue 29 (BEFORE: oneDNN with a cache of 10 shapes, IR passes on, Paddle's
per-tensor garbage collection, the SDPA export, the input/output handles made once and filled with
copy_from_cpu / copy_to_cpu, ``--threads`` math threads) and ONE setting changed; then
FeaturePredictor with today's defaults (AFTER) and ONNX Runtime on the same ``--threads``.
Every side gets the same input; its features' max |diff| against the dygraph model is printed
(the settings that ship must stay within 1e-4).

Calls are interleaved side by side; on the quickstart rows each timed call follows an untimed call
of the same side: ONNX Runtime's and OpenMP's worker threads spin for a while after a run, and the
untimed call keeps one runtime's spinning out of the next one's timing. Best of ``--repeats``
(medians beside).
``--base after`` changes each setting from today's defaults instead (small effects stand out
better there: BEFORE's per-tensor GC thread makes its own times noisy).
Last line: the AFTER / BEFORE speed ratio on the first row, ratio first (with ``--base after``:
the best single change's speed ratio over the defaults).
"""
import argparse
import os
import tempfile

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle

from ppufo.inference.predictor import (FeaturePredictor, OnnxPredictor, build_config, config_calls,
                                       first_run_flags, load_model_info, model_format)
from ppufo.utils.paddle_flags import paddle_flags

_SPEED = {}


def speed():
    """benchmark/infer_speed.py's namespace (ROWS, Side, export_pair, measure), loaded once; the
    sibling script, without editing the import path (tests/unit/test_layers.py)."""
    if not _SPEED:
        import runpy
        _SPEED.update(runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "infer_speed.py")))
    return _SPEED


BEFORE = dict(enable_mkldnn=True, mkldnn_cache_capacity=10, ir_optim=True, gc_mb=0, fuse_attention=False)
# FeaturePredictor's defaults now for models of 64 MB of weights and more, on the packed export
# (--base after); smaller ones get predictor.SMALL_MODEL on top
AFTER = dict(enable_mkldnn=True, mkldnn_cache_capacity=10, ir_optim=True, gc_mb=64, fuse_attention=True)


class Settings:
    """A Paddle Inference predictor of BEFORE's options updated by ``options``, plus raw Config
    calls (``extra``), Paddle flags for its first run (``flags``), and an I/O style: 'handles'
    (made once, copy_from_cpu / copy_to_cpu, as FeaturePredictor), 'fresh' (handles looked up on
    every call), 'run_list' (predictor.run([paddle.Tensor]) -> [paddle.Tensor])."""

    def __init__(self, model_dir, threads, options=None, extra=(), flags=None, io="handles", base=BEFORE):
        import paddle.inference as pi
        opts = {**base, "cpu_threads": threads, **(options or {})}
        info = load_model_info(model_dir)
        calls = config_calls(info["image_shape"], model_format(model_dir), **opts)
        self.predictor = pi.create_predictor(build_config(model_dir, list(calls) + list(extra)))
        self.flags = {**first_run_flags("cpu", opts["gc_mb"]), **(flags or {})}
        self.io, self.built = io, False
        self.names = self.predictor.get_input_names()[0], self.predictor.get_output_names()[0]
        self.input = self.predictor.get_input_handle(self.names[0])
        self.output = self.predictor.get_output_handle(self.names[1])

    def _once(self, x):
        p = self.predictor
        if self.io == "run_list":
            return p.run([paddle.to_tensor(x)])[0].numpy()
        i, o = (self.input, self.output) if self.io == "handles" else \
            (p.get_input_handle(self.names[0]), p.get_output_handle(self.names[1]))
        i.reshape(x.shape)
        i.copy_from_cpu(x)
        p.run()
        return o.copy_to_cpu()

    def __call__(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.built or not self.flags:
            feats = self._once(x)
        else:
            with paddle_flags(self.flags):
                feats = self._once(x)
        self.built = True
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def engine_toggles(s):
    """The IR / oneDNN / executor settings toggled on top of either base (``s`` builds a side)."""
    return [
        ("IR passes off", s(options={"ir_optim": False})),
        ("oneDNN fc passes off", s(extra=[("disable_mkldnn_fc_passes", (), {})])),
        ("oneDNN cache unbounded (0)", s(options={"mkldnn_cache_capacity": 0})),
        ("oneDNN cache 1", s(options={"mkldnn_cache_capacity": 1})),
        ("oneDNN off (Paddle's CPU kernels + MKL)", s(options={"enable_mkldnn": False})),
        ("optimization level 3", s(extra=[("set_optimization_level", (3,), {})])),
        ("new executor off", s(extra=[("enable_new_executor", (False,), {})])),
        ("PIR off (enable_new_ir(False))", s(extra=[("enable_new_ir", (False,), {})])),
        ("executor serial run flag", s(flags={"FLAGS_new_executor_serial_run": True})),
    ]


def io_toggles(s):
    """Threads and how inputs reach the predictor, toggled on top of either base."""
    return [
        ("1 thread", s(options={"cpu_threads": 1})),
        ("handles looked up per call", s(io="fresh")),
        ("run([paddle.Tensor])", s(io="run_list")),
    ]


def sides_for(sdpa, packed, threads):
    """[(name, builder)]: BEFORE, each setting alone, a few combinations, AFTER, ONNX Runtime."""
    s = lambda d=sdpa, **kw: (lambda: Settings(d, threads, **kw))  # noqa: E731
    return [
        ("BEFORE (oneDNN, cache 10, IR on, per-tensor GC, SDPA export)", s()),
        *engine_toggles(s),
        ("GC in 64 MB batches", s(options={"gc_mb": 64})),
        ("GC off (tensors kept for the next run)", s(options={"gc_mb": -1})),
        *io_toggles(s),
        ("packed-attention export (no fusion)", s(packed)),
        ("packed export + attention fusion", s(packed, options={"fuse_attention": True})),
        ("oneDNN bf16", s(extra=[("enable_mkldnn_bfloat16", (), {})])),
        # combinations the defaults were chosen among
        ("combined: oneDNN, GC 64 MB, packed + fusion", s(packed, options={"gc_mb": 64, "fuse_attention": True})),
        ("combined: oneDNN, GC off, packed + fusion", s(packed, options={"gc_mb": -1, "fuse_attention": True})),
        ("combined: oneDNN off, GC 64 MB, packed + fusion",
         s(packed, options={"enable_mkldnn": False, "gc_mb": 64, "fuse_attention": True})),
        ("combined: oneDNN off, GC off, packed + fusion",
         s(packed, options={"enable_mkldnn": False, "gc_mb": -1, "fuse_attention": True})),
        ("AFTER (FeaturePredictor defaults)", lambda: FeaturePredictor(packed, cpu_threads=threads)),
        ("ONNX Runtime (packed export)", lambda: OnnxPredictor(packed, cpu_threads=threads)),
        ("ONNX Runtime (SDPA export)", lambda: OnnxPredictor(sdpa, cpu_threads=threads)),
    ]


def sides_after(sdpa, packed, threads):
    """[(name, builder)]: AFTER (the defaults now) as Settings, each setting toggled on top of it,
    FeaturePredictor itself, ONNX Runtime (--base after: small effects, without BEFORE's GC noise)."""
    s = lambda d=packed, **kw: (lambda: Settings(d, threads, base=AFTER, **kw))  # noqa: E731
    return [
        ("BASE (oneDNN, cache 10, IR on, GC 64 MB, packed + fusion: the defaults from 64 MB of weights)", s()),
        ("small-model options (oneDNN off, GC off)", s(options={"enable_mkldnn": False, "gc_mb": -1})),
        *engine_toggles(s),
        ("GC per tensor (Paddle's default)", s(options={"gc_mb": 0})),
        ("GC off (tensors kept for the next run)", s(options={"gc_mb": -1})),
        *io_toggles(s),
        ("attention fusion off", s(options={"fuse_attention": False})),
        ("SDPA export", s(sdpa, options={"fuse_attention": False})),
        ("AFTER (FeaturePredictor defaults)", lambda: FeaturePredictor(packed, cpu_threads=threads)),
        ("ONNX Runtime (packed export)", lambda: OnnxPredictor(packed, cpu_threads=threads)),
    ]


def run_row(row, batch, repeats, threads, work, group, base="before"):
    """Times every side of one row, in groups of ``group`` sides besides BEFORE (0: all at once;
    a ViT-B predictor holds about 0.7 GB, so ViT-B rows are timed a group at a time, each group
    with its own BEFORE, and each ratio is against the BEFORE timed beside it)."""
    Side, measure = speed()["Side"], speed()["measure"]
    label, overrides = speed()["ROWS"][row]
    sdpa, packed, ref_fn, shape, _ = speed()["export_pair"](overrides, work)
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype("float32")
    ref = ref_fn(x, threads)
    builders = (sides_for if base == "before" else sides_after)(sdpa, packed, threads)
    rest = builders[1:]
    size = group or len(rest)
    print(f"{label}, batch {batch}, {threads} threads, best of {repeats} (median):", flush=True)
    after, ratios = None, {}
    for start in range(0, len(rest), size):
        sides, notes = [], []
        for name, build in [builders[0]] + rest[start:start + size]:
            try:
                fn = build()
                diff = float(np.abs(fn(x) - ref).max())
            except Exception as e:  # a setting Paddle refuses for this model: reported, not timed
                notes.append(f"  {name}: fails: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}")
                continue
            side = Side(name, fn)
            side.diff = diff
            sides.append(side)
        times, medians = measure(sides, x, repeats, lead_in=row == "qs")  # ViT-B's calls dwarf any spinning
        ref_t = times[0]
        for i, (s, t, m) in enumerate(zip(sides, times, medians)):
            if i == 0 and start:
                continue  # BEFORE is printed once, from the first group
            ok = "" if s.diff <= 1e-4 else "  OVER 1e-4"
            print(f"  {s.name}: {t * 1e3:.2f} ms ({m * 1e3:.2f}), {ref_t / t:.2f}x {base.upper()}; "
                  f"max |diff| vs dygraph {s.diff:.1e}{ok}", flush=True)
            ratios[s.name] = ref_t / t
            if s.name.startswith("AFTER"):
                after = ref_t / t
        for n in notes:
            print(n, flush=True)
        del sides
    return label, batch, after, ratios


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    p.add_argument("--rows", default="qs1,qs8,vitb1", help="comma list of qs1, qs8, vitb1, vitb8")
    p.add_argument("--base", choices=("before", "after"), default="before",
                   help="change each setting from the settings before issue 29, or from the defaults now")
    p.add_argument("--group", type=int, default=8, help="ViT-B sides timed together besides BEFORE (0: all)")
    a = p.parse_args()
    paddle.set_device("cpu")
    results = []
    with tempfile.TemporaryDirectory(prefix="ppufo_infer_settings_") as work:
        for item in a.rows.split(","):
            row, batch = item.rstrip("0123456789"), int(item[len(item.rstrip("0123456789")):])
            results.append(run_row(row, batch, a.repeats, a.threads, work, 0 if row == "qs" else a.group, a.base))
    label, batch, ratio, ratios = results[0]
    if a.base == "after":
        name, best = max(((k, v) for k, v in ratios.items() if not k.startswith(("AFTER", "ONNX"))),
                         key=lambda kv: kv[1])
        print(f"{best:.2f}x the defaults' speed with the best single change ({name}; {label}, batch {batch}, "
              f"{a.threads} threads)")
        return
    print(f"{ratio:.2f}x Paddle Inference with ppufo's new defaults vs before ({label}, batch {batch}, "
          f"{a.threads} threads, features within 1e-4 of dygraph)")


if __name__ == "__main__":
    main()
