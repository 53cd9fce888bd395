"""Per-GPU training memory of a config, from the model's own shapes (no GPU, no weights needed;
a PaddleClas CNN backbone, e.g. ResNet50, is built on the CPU and one training step at batch 1 and
at batch 2 is measured with Paddle's allocator: a few seconds).

python tools/plan_memory.py -c configs/ufo_vitl.yaml [-o Section.key=value ...] [--gpu_mem 80] [--gpus 8]
    [--num_classes face=93431 ...]

Prints parameters, gradients, optimizer state, activations per image (fp32 / bf16 O1 / bf16 O2,
without and with Arch.Backbone.recompute), then the peak on one of --gpus GPUs at the per-GPU
batch the config implies (sum of Tasks.<t>.batch_size / gpus; with HomogeneousBatchSampler, one
task a step: the costliest task's step) and the largest per-GPU batch that fits in --gpu_mem GiB,
at the config's own precision (Global.amp) and recompute setting.
What is and is not counted: ppufo/arch/memory_plan.py.
"""
import sys

from ..arch.memory_plan import GiB, MemoryPlan
from ..utils.config import arg_range, load_config, parse_args
from ..utils.errors import ConfigError

PRECISION_NAMES = {"fp32": "fp32", "O1": "AMP O1", "O2": "AMP O2 (fp32 master weights)"}


def _args(p):
    p.add_argument("--gpu_mem", type=arg_range(float, above=0), default=80.0, help="memory of one GPU, GiB")
    p.add_argument("--gpus", type=arg_range(int, min=1), default=8, help="GPUs the global batch is split over")
    p.add_argument("--num_classes", nargs="+", default=[], metavar="TASK=N",
                   help="classifier sizes (default: the full public training sets of the task's datasets)")


def _gib(b):
    return f"{b / GiB:9.2f} GiB"


def _header(plan, prec):
    bk, bb = plan.backbone, plan.config["Arch"]["Backbone"]
    size = f"{plan.image_hw[0]}x{plan.image_hw[1]} images; precision {prec}"
    if plan.cnn:
        model = bb["name"] + (f" {bb.get('model', 'ResNet50')}" if bb["name"] == "PaddleClasBackbone" else "")
        bns = sum(1 for m in bk.sublayers() if "BatchNorm" in type(m).__name__)
        return (f"  {model} (PaddleClas CNN): {bns} BatchNorm layers, {bk.out_dim}-d feature, {size}; "
                f"recompute n/a; optimizer state {plan.buffers} per parameter")
    return (f"  {bb['name']}: {len(bk.blocks)} blocks, dim {bk.embed_dim}, {size}; attention "
            f"{'fused (flash / memory-efficient on GPU)' if plan.attention == 'flash' else 'matmul-softmax-matmul'}"
            f"; recompute {'on' if plan.recompute else 'off'}; optimizer state {plan.buffers} per parameter")


def report(plan, gpus, gpu_mem, name):
    """The table, as lines; the last is the summary."""
    g = plan.config["Global"]
    prec = PRECISION_NAMES[plan.precision] + (f", {g['amp']['dtype']}" if plan.precision != "fp32" else "")
    lines = [f"memory plan: {name}", _header(plan, prec),
             "  classes: " + ", ".join(f"{t} {k:,}" for t, k in plan.num_classes.items()), "",
             f"  {'parameters':<44}{'count':>10}"]
    for part, n in plan.params.items():
        lines.append(f"    {part:<42}{n / 1e6:>9.1f}M")
    what = ", largest subnet)" if plan.supernet else ")"
    if plan.cnn:
        what = ("; fp32 MEASURED: Paddle's CPU allocator around one train-mode forward + backward of the real "
                "model at batch 1 and 2; AMP COMPUTED from it: 16-bit activations + 16-bit image copy)")
    lines += ["", "  activations kept per image (backbone" + what,
              f"    {'':<28}" + "".join(f"{PRECISION_NAMES[p].split(' (')[0]:>14}" for p in ("fp32", "O1", "O2"))]
    for rc in (False, True):
        label = "recompute (+ one block)" if rc else "no recompute"
        if rc and plan.cnn:
            lines.append(f"    {label:<28}{'n/a (PaddleClas backbones have no recompute)':>42}")
            continue
        row = [plan.per_image(p, rc) for p in ("fp32", "O1", "O2")]
        lines.append(f"    {label:<28}" + "".join(f"{b / 2 ** 20:>11.1f} MB" for b in row))
    per_gpu, step = plan.peak_step(gpus)
    batch = sum(per_gpu.values())
    note = " (the largest subnet's sandwich pass)" if plan.supernet else ""
    if plan.homogeneous:
        note = " (HomogeneousBatchSampler: one task a step; its costliest step)"
    lines += ["", f"  one GPU of {gpus}: batch {batch:g} = " + " + ".join(f"{t} {v:g}" for t, v in per_gpu.items())
              + note]
    lines += [f"    {k:<52}{_gib(v)}" for k, v in step.items()]
    if plan.cnn:
        lines.append("    (backbone activations and its working set: measured per image x batch; the rest computed)")
    best = plan.max_batch(gpu_mem * GiB)
    fits = step["peak"] <= gpu_mem * GiB
    lines.append(f"  largest per-GPU batch within {gpu_mem:g} GiB: {best} "
                 f"({'one task a step, every task' if plan.homogeneous else 'same task mix'})")
    lines.append(f"{name}: {step['peak'] / GiB:.1f} GiB peak per GPU at batch {batch:g} on {gpus} GPUs "
                 f"({'fits' if fits else 'does NOT fit'} {gpu_mem:g} GiB; largest batch {best}; "
                 f"{plan.precision}, recompute {'on' if plan.recompute else 'off'})")
    return lines


def main():
    args = parse_args("ppufo memory plan", _args)
    try:
        config = load_config(args.config, args.override)
        given = {}
        for item in args.num_classes:
            task, _, n = item.partition("=")
            if not n.isdigit() or int(n) < 1:
                raise ConfigError(f"--num_classes {item}: expected TASK=N with N >= 1")
            given[task] = int(n)
        plan = MemoryPlan(config, given)
        print("\n".join(report(plan, args.gpus, args.gpu_mem, args.config)))
    except ConfigError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
