"""Build a chip's per-layer latency table (ppufo/chips/tables/<chip>.json) for a supernet config.

On the device (measured with the chip's runtime; no weights needed, latency does not depend on them):
    python tools/build_latency_table.py -c configs/supernet_quickstart.yaml -o Search.chip=cpu_x86
    python tools/build_latency_table.py -c configs/supernet_quickstart.yaml -o Search.chip=cpu_x86_ort   # ONNX Runtime
    python tools/build_latency_table.py -c configs/supernet_quickstart.yaml -o Search.chip=cpu_x86_int8  # int8 probes
For a chip not at hand, a PLACEHOLDER from FLOPs and an assumed throughput, labelled as such:
    python tools/build_latency_table.py -c configs/supernet_quickstart.yaml -o Search.chip=gpu \
        --estimate_gflops 4000 --overhead_ms 0.01 --note "order-of-magnitude guess for a datacenter GPU"

The table is stored for the config's geometry (embed_dim, head_dim, patch, image_shape,
Search.batch_size); a table of the same geometry in the file is replaced, others are kept.
"""
import datetime
import os
import platform
import shlex
import sys

from ..chips import RUNTIME_CHOICES
from ..utils.config import arg_range, cli_config
from ..utils.errors import ConfigError


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_version(chip):
    """The runtime that times ``chip`` and its version (for ONNX Runtime also the converter's)."""
    from ..chips import chip_backend
    if chip_backend(chip) == "onnxruntime":
        import onnxruntime
        import paddle2onnx
        return f"ONNX Runtime {onnxruntime.__version__} / paddle2onnx {paddle2onnx.__version__}"
    import paddle
    return f"Paddle Inference {paddle.__version__}"


def int8_note(chip, config):
    """For an int8 chip, how its probes were quantised and whether this CPU has VNNI (the int8 dot
    product instructions; without them oneDNN's int8 kernels are slower)."""
    from ..chips import QUANTIZED_CHIPS
    if chip not in QUANTIZED_CHIPS:
        return ""
    from paddle.base import core

    from ..nas.latency_probes import PROBE_CALIBRATION as c
    from ..slim.quantize import WEIGHT_QUANTIZE
    return (f" on int8 probes (oneDNN int8 kernels for Quant.int8_ops {list(config['Quant']['int8_ops'])}; "
            f"PostTrainingQuantization {c['algo']} on {c['images']} random images, weights {WEIGHT_QUANTIZE}; this CPU "
            f"{'has' if core.supports_vnni() else 'lacks'} AVX-512 VNNI)")


def load_note(before, after):
    """The machine's load while the table was timed: other jobs make every entry larger (and noisier)."""
    cores = os.cpu_count() or 1
    busy = before >= 0.5
    return (f"1-minute load average {before:.2f} at the start, {after:.2f} at the end, {cores} logical cores: "
            + ("BUILT UNDER LOAD (other jobs were running); rebuild on a quiet machine for absolute numbers"
               if busy else "the machine was otherwise idle at the start"))


def extra(p):
    p.add_argument("--estimate_gflops", type=arg_range(float, above=0), default=None,
                   help="write a placeholder from FLOPs at this assumed GFLOP/s instead of measuring")
    p.add_argument("--overhead_ms", type=arg_range(float, min=0), default=0.0, help="assumed ms per kernel launch (estimate)")
    p.add_argument("--note", default="", help="stored in the provenance (for an estimate: why these assumptions)")
    p.add_argument("--copies", type=arg_range(int, min=1), default=8, help="stacked copies per op when measuring")
    p.add_argument("--output", default=None, help="table file (default ppufo/chips/tables/<chip>.json)")


def main():
    args, config = cli_config("ppufo latency table", extra=extra)
    import paddle
    from tqdm import tqdm

    from ..nas.latency import chip_present
    from ..nas.latency_probes import estimate_table, measure_table, supernet_space, table_entry
    from ..nas.latency_table import write_table
    s, g = config["Search"], config["Global"]
    chip, bs = s["chip"], s["batch_size"]
    try:
        if chip in RUNTIME_CHOICES:
            raise ConfigError(f"Search.chip={chip} chooses between {list(RUNTIME_CHOICES[chip])} and has no table of its "
                              f"own: build each of theirs (-o Search.chip={RUNTIME_CHOICES[chip][0]}, ...)")
        if config["Arch"]["Backbone"].get("name") != "ViTSupernet":
            raise ConfigError(f"{args.config}: Arch.Backbone.name must be ViTSupernet (the table covers its space)")
        paddle.set_device("cpu")
        space = supernet_space(config)
        task = next(iter(config["Tasks"]))
        when = datetime.date.today().isoformat()
        if args.estimate_gflops:
            entries = estimate_table(space, g["image_shape"], bs, args.estimate_gflops, args.overhead_ms)
            prov = {"measured": False,
                    "how": (f"PLACEHOLDER, not measured: forward FLOPs / {args.estimate_gflops:g} GFLOP/s (assumed) "
                            f"+ {args.overhead_ms:g} ms per kernel launch (assumed). Replace it by running "
                            f"tools/build_latency_table.py on the device."),
                    "note": args.note, "date": when, "command": "python " + shlex.join(sys.argv)}
        else:
            if not chip_present(chip):
                raise ConfigError(f"Search.chip={chip} is not present here; measure on the device, or write a "
                                  f"placeholder with --estimate_gflops")
            before = os.getloadavg()[0]
            entries = measure_table(config, space, task, chip, bs, s["warmup"], s["repeats"], s["cpu_threads"],
                                    args.copies, s["timer"], s["rounds"], s["quantile"], progress=tqdm)
            prov = {"measured": True,
                    "how": (f"{runtime_version(chip)} ({chip}, {s['cpu_threads']} CPU thread(s)){int8_note(chip, config)}, "
                            f"{s['quantile']:g} quantile of the {s['timer']} time of {s['repeats']} runs after {s['warmup']} "
                            f"warm-up runs, all probes interleaved over {s['rounds']} passes; stem = the exported "
                            f"model without blocks; an op = (stem + {args.copies} stacked copies - stem) / "
                            f"{args.copies}"),
                    "machine": f"{cpu_name()}, {os.cpu_count()} logical cores",
                    "load": load_note(before, os.getloadavg()[0]), "date": when,
                    "command": "python " + shlex.join(sys.argv)}
            if args.note:
                prov["note"] = args.note
        path = write_table(chip, table_entry(entries, space, g["image_shape"], bs, prov), args.output)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {path}: stem {entries['stem']} ms, attention {entries['attention']}, ffn {entries['ffn']}")


if __name__ == "__main__":
    main()
