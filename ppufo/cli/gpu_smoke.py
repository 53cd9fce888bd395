"""Check a training config on the GPU it will train on, before the long job.

python tools/gpu_smoke.py -c configs/ufo_vitl.yaml [-o Section.key=value ...] [--steps 20] [--gpus 8]
    [--loss_rtol 0.05] [--feature_atol 0.001] [--work_dir DIR]          (ppufo-gpu-smoke)

Trains --steps steps of the config twice on one GPU, from the same initial weights and batches:
once in fp32 and once in the configured AMP (Global.amp; its dtype and level when the config trains
in fp32). No evaluation, no checkpoints; --gpus N runs each task's batch / N, the per-GPU batch of
the long job on N GPUs. Checks:

- loss: every step's AMP loss within --loss_rtol (relative) of the fp32 loss, all finite;
- speed: images/s on this GPU over the steps after the first quarter (reported);
- memory: each run's allocator peak within ppufo-plan-memory's peak at that precision (--gpus);
- attention: the kernels Paddle's scaled_dot_product_attention chose; "math" in the configured
  precision's run fails where the config fuses attention (the memory plan assumes flash);
- export: the fp32 model exported as for deployment, run by Paddle Inference on the GPU (and by
  TensorRT fp32 where it can run), gives the dygraph features within --feature_atol.

Exit status: 0 every check passed, 1 a check failed (or a config or data error), 2 no GPU here.
"""
import argparse
import contextlib
import copy
import gc
import os
import sys
import tempfile
import time
from collections import namedtuple

import numpy as np

from ..utils.config import arg_range, load_config, parse_args
from ..utils.errors import ConfigError, DataError

GiB = 2 ** 30
Check = namedtuple("Check", "name ok detail")  # ok: True, False, or None (reported, not checked)


def no_gpu_reason():
    """Why this process cannot train on a GPU, or None."""
    import paddle
    if not paddle.is_compiled_with_cuda():
        return f"paddlepaddle {paddle.__version__} here is a CPU-only build"
    if paddle.device.cuda.device_count() == 0:
        return "no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, driver)"
    return None


# ----------------------------------------------------------------------------- checks (pure)

def loss_check(fp32, amp, rtol):
    fp32, amp = np.asarray(fp32, np.float64), np.asarray(amp, np.float64)
    if len(fp32) != len(amp) or not len(fp32):
        raise ValueError(f"loss curves of {len(fp32)} and {len(amp)} steps")
    for name, curve in (("fp32", fp32), ("AMP", amp)):
        bad = np.flatnonzero(~np.isfinite(curve))
        if len(bad):
            return Check("loss", False, f"{name} loss is {curve[bad[0]]} at step {bad[0] + 1}")
    rel = np.abs(amp - fp32) / np.maximum(np.abs(fp32), 1e-12)
    w = int(np.argmax(rel))
    return Check("loss", bool(rel[w] <= rtol),
                 f"AMP vs fp32 over {len(rel)} steps: largest relative difference {rel[w]:.2%} at step {w + 1} "
                 f"(fp32 {fp32[w]:.4f}, AMP {amp[w]:.4f}); tolerance {rtol:.2%}")


def images_per_second(images, seconds, warmup):
    """Images per second over the steps after the first ``warmup`` (kernel selection, allocator
    growth and the loader's start are in those)."""
    n, t = sum(images[warmup:]), sum(seconds[warmup:])
    if not n or t <= 0:
        raise ValueError(f"no timed steps after {warmup} warm-up steps of {len(images)}")
    return n / t


def speed_check(fp32, amp, on_gpu=True):
    """``fp32`` / ``amp``: images/s of each run (training steps, data loading included)."""
    where = "per GPU" if on_gpu else "on the CPU"
    return Check("speed", None, f"{fp32:.1f} images/s {where} in fp32, {amp:.1f} in AMP ({amp / fp32:.2f}x)")


def memory_check(label, measured, plan_peak, plan_tensors, gpus):
    """``measured``: the allocator's peak bytes (None off a GPU); the plan's peak and its counted
    tensors (the peak without the margin for the CUDA context and fragmentation)."""
    what = f"plan {plan_peak / GiB:.2f} GiB ({plan_tensors / GiB:.2f} GiB of tensors + margin) " \
           f"at --gpus {gpus}"
    if measured is None:
        return Check(f"memory {label}", None, f"{what}; not measured (no GPU)")
    note = "" if measured <= plan_tensors else " (above the counted tensors, within the margin)"
    return Check(f"memory {label}", bool(measured <= plan_peak),
                 f"{what}; measured peak allocated {measured / GiB:.2f} GiB{note}")


def attention_check(selected, fused, on_gpu, run):
    """``selected``: {kernel: calls} of scaled_dot_product_attention in the run in the configured
    precision (``run`` names it)."""
    name = "attention"
    if not on_gpu:
        return Check(name, None, "not applicable on a CPU (Paddle's scaled_dot_product_attention has only "
                                 f"its math path there; {run} run: {dict(selected) or 'no calls'})")
    if not fused:
        return Check(name, None, "not applicable: Arch.Backbone.fused_attention is false (matmul-softmax-matmul)")
    if not selected:
        return Check(name, None, "no scaled_dot_product_attention call (a backbone without attention)")
    calls = ", ".join(f"{k} {v}" for k, v in sorted(selected.items()))
    if selected.get("math"):
        return Check(name, False, f"{run} run: {calls} calls; the math path keeps the attention map (the "
                                  f"memory plan assumes flash): flash needs float16/bfloat16 and a head dim <= 256")
    return Check(name, True, f"{run} run: {calls} calls" + ("" if "flash_attn" in selected else
                                                            " (memory-efficient, not flash)"))


def feature_check(name, got, ref, atol):
    if got.shape != ref.shape:
        return Check(name, False, f"features of shape {list(got.shape)}, dygraph {list(ref.shape)}")
    diff = float(np.abs(got - ref).max())
    return Check(name, bool(diff <= atol), f"max |difference| to the dygraph features {diff:.2e}; tolerance {atol:g}")


# ----------------------------------------------------------------------------- the runs

def smoke_config(config, steps, gpus, device, out_dir, amp):
    """``config`` for one run: ``steps`` steps on ``device`` into ``out_dir``, no evaluation or
    checkpoints, each task's batch divided by ``gpus``, AMP on or off."""
    cfg = copy.deepcopy(config)
    g = cfg["Global"]
    g.update(device=device, max_iters=steps, eval_interval=0, save_interval=0, use_visualdl=False,
             checkpoints=None, output_dir=out_dir)
    g["amp"] = dict(g["amp"], enable=amp)
    for t, tcfg in cfg["Tasks"].items():
        if tcfg["batch_size"] % gpus:
            raise ConfigError(f"Tasks.{t}.batch_size={tcfg['batch_size']} is not divisible by --gpus {gpus}")
        tcfg["batch_size"] //= gpus
    return cfg


def train_steps(trainer, steps, sync):
    """(losses, seconds, images) of each of ``steps`` training steps, each timed to its end on the device."""
    losses, seconds, images = [], [], []
    trainer.model.train()
    batches = iter(trainer.loader)
    try:
        t = time.perf_counter()
        for it in range(trainer.start_iter + 1, trainer.start_iter + steps + 1):
            batch = next(batches)
            losses.append(float(trainer.train_step(batch, it)["loss"]))  # waits for the step
            sync()
            now = time.perf_counter()
            seconds.append(now - t)
            images.append(int(batch[0].shape[0]))
            t = now
    finally:
        trainer.stop_loader(batches)
    return losses, seconds, images


def export_checks(model, cfg, on_gpu, atol):
    """Export ``model``'s first task as tools/export_model.py does; its Paddle Inference (and
    TensorRT) features against the dygraph ones on a fixed random batch."""
    import paddle

    from ..chips import tensorrt_env, tensorrt_problem
    from ..engine.exporter import export_task
    from ..inference.predictor import FeaturePredictor
    task = model.task_names[0]
    d = os.path.join(cfg["Global"]["output_dir"], "export", task)
    model.eval()
    export_task(model, task, cfg, d)
    x = np.random.default_rng(0).standard_normal((4, *cfg["Global"]["image_shape"])).astype("float32")
    with paddle.no_grad():
        ref = model.embed(paddle.to_tensor(x), task).numpy()
    device = "gpu" if on_gpu else "cpu"
    out = [feature_check(f"export {task} -> Paddle Inference ({device})", FeaturePredictor(d, device=device)(x),
                         ref, atol)]
    name = f"export {task} -> TensorRT fp32"
    problem = tensorrt_problem(tensorrt_env(), "pir", "fp32", False) if on_gpu else "not applicable on a CPU"
    if problem:
        return out + [Check(name, None, f"skipped: {problem}")]
    return out + [feature_check(name, FeaturePredictor(d, device="gpu", use_tensorrt=True, max_batch_size=4)(x),
                                ref, atol)]


def one_run(cfg, steps, on_gpu, export_atol=None):
    """{"losses", "seconds", "images", "peak", "attention", "num_classes", "checks"} of one run;
    with ``export_atol`` its model is exported and checked after training."""
    import paddle

    from ..engine import build_trainer
    from ..utils.paddle_internals import sdpa_selections
    cuda = paddle.device.cuda
    if on_gpu:
        cuda.reset_max_memory_allocated()
    trainer = build_trainer(cfg)
    try:
        with sdpa_selections() as selected:
            losses, seconds, images = train_steps(trainer, steps, cuda.synchronize if on_gpu else lambda: None)
        out = {"losses": losses, "seconds": seconds, "images": images, "attention": selected,
               "peak": cuda.max_memory_allocated() if on_gpu else None,
               "num_classes": {t: d.num_classes for t, d in trainer.task_sets.items()}, "checks": []}
        if export_atol is not None:
            try:
                out["checks"] = export_checks(trainer.model, cfg, on_gpu, export_atol)
            except Exception as e:  # noqa: BLE001 - a failed export is a failed check; the report goes on
                out["checks"] = [Check("export", False, f"{type(e).__name__}: {e}")]
    finally:
        trainer.close()
        del trainer
        gc.collect()
        if on_gpu:
            cuda.empty_cache()
    return out


def planned(cfg, num_classes, precision):
    """(peak, counted tensors) bytes of ppufo-plan-memory for ``cfg``'s per-GPU batch."""
    from ..arch.memory_plan import MemoryPlan
    _, step = MemoryPlan(cfg, num_classes, precision=precision).peak_step(1)
    return step["peak"], sum(v for k, v in step.items() if k != "peak" and not k.startswith("margin"))


def smoke(config, steps=20, gpus=1, loss_rtol=0.05, feature_atol=1e-3, work_dir=None, allow_cpu=False):
    """[Check] of the module doc for ``config``. Without a GPU: RuntimeError, unless ``allow_cpu``
    (tests: the same flow on the CPU, where the memory and attention checks do not apply)."""
    reason = no_gpu_reason()
    if reason and not allow_cpu:
        raise RuntimeError(reason)
    on_gpu = reason is None
    amp = config["Global"]["amp"]
    level = amp["level"]
    with (contextlib.nullcontext(work_dir) if work_dir else tempfile.TemporaryDirectory(prefix="ppufo_smoke_")) as root:
        cfgs = {name: smoke_config(config, steps, gpus, "gpu" if on_gpu else "cpu", os.path.join(root, name),
                                   name == "amp") for name in ("fp32", "amp")}
        runs = {"fp32": one_run(cfgs["fp32"], steps, on_gpu, export_atol=feature_atol),
                "amp": one_run(cfgs["amp"], steps, on_gpu)}
    warmup = max(1, steps // 4)
    speed = {k: images_per_second(r["images"], r["seconds"], warmup) for k, r in runs.items()}
    configured = "amp" if amp["enable"] else "fp32"
    bb = config["Arch"]["Backbone"]
    checks = [loss_check(runs["fp32"]["losses"], runs["amp"]["losses"], loss_rtol),
              speed_check(speed["fp32"], speed["amp"], on_gpu)]
    for k, precision in (("fp32", "fp32"), ("amp", level)):
        label = "fp32" if k == "fp32" else f"AMP {amp['dtype']} {level}"
        try:
            plan = planned(cfgs[k], runs[k]["num_classes"], precision)
        except ConfigError as e:  # a backbone the plan does not model
            checks.append(Check(f"memory {label}", None, f"no memory plan: {e}"))
            continue
        checks.append(memory_check(label, runs[k]["peak"], *plan, gpus))
    checks.append(attention_check(runs[configured]["attention"], bb.get("fused_attention", True), on_gpu,
                                  "fp32" if configured == "fp32" else "AMP"))
    return checks + runs["fp32"]["checks"]


def report(checks):
    marks = {True: "PASS", False: "FAIL", None: "INFO"}
    lines = [f"  {marks[c.ok]}  {c.name}: {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.ok is False]
    lines.append("gpu smoke: " + (f"FAILED ({', '.join(failed)})" if failed else
                                  f"passed ({sum(c.ok is True for c in checks)} checks)"))
    return lines


def _args(p):
    p.add_argument("--steps", type=arg_range(int, min=2), default=20, help="training steps per run")
    p.add_argument("--gpus", type=arg_range(int, min=1), default=1,
                   help="GPUs the long job trains on: each task's batch is divided by it (its per-GPU batch)")
    p.add_argument("--loss_rtol", type=arg_range(float, above=0), default=0.05,
                   help="largest relative difference of an AMP step's loss from the fp32 step's")
    p.add_argument("--feature_atol", type=arg_range(float, above=0), default=1e-3,
                   help="largest difference of an exported model's feature from the dygraph one")
    p.add_argument("--work_dir", default=None, help="keep the runs' folders here (default: a temporary folder)")
    p.add_argument("--allow_cpu", action="store_true", help=argparse.SUPPRESS)  # tests: the flow on a CPU


def main():
    args = parse_args("ppufo GPU smoke test", _args)
    reason = None if args.allow_cpu else no_gpu_reason()
    if reason:
        print(f"ppufo-gpu-smoke: {reason}; nothing was run. Run it on a machine with the GPUs the "
              f"long job will use.", file=sys.stderr)
        sys.exit(2)
    from ..arch.trained import check_source
    from ..demo import ensure_demo_data
    try:
        config = load_config(args.config, args.override)
        check_source(config)
        ensure_demo_data(config)
        checks = smoke(config, args.steps, args.gpus, args.loss_rtol, args.feature_atol, args.work_dir,
                       allow_cpu=args.allow_cpu)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    print("\n".join(report(checks)), flush=True)
    sys.exit(1 if any(c.ok is False for c in checks) else 0)


if __name__ == "__main__":
    main()
