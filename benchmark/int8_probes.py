"""fp32 (cpu_x86) vs int8 (cpu_x86_int8) per-layer latency of a supernet, side by side in one run.

python benchmark/int8_probes.py [-c configs/supernet_quickstart.yaml] [--copies 8] [--repeats 100] [--rounds 60]

The latency-table probes (ppufo/nas/latency_probes.py: the stem, then the stem + ``copies``
stacked attentions or FFNs of each width) are exported in float and quantised, and all of them are
timed in one interleaved group with their chip's predictor (1 thread, the 0.1 quantile of the
thread CPU time, as the shipped tables). Per entry: fp32 ms, int8 ms and fp32 / int8 (above 1:
int8 is faster). cpu_x86 runs a model under 64 MB of weights with oneDNN off (predictor.small_model),
cpu_x86_int8 keeps oneDNN on (its int8 kernels are oneDNN's): each as the chip deploys it.
"""
import argparse
import os
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default=os.path.join(ROOT, "configs", "supernet_quickstart.yaml"))
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--rounds", type=int, default=60)
    args = p.parse_args()
    from ppufo.nas.latency import temp_dirs, time_model_dirs
    from ppufo.nas.latency_probes import export_float_probes, export_int8_probes, probe_entries, supernet_space
    from ppufo.utils.config import load_config
    cfg = load_config(args.config)
    space, task = supernet_space(cfg), next(iter(cfg["Tasks"]))
    names = ["stem"] + [f"{op} {n}" for op, n in probe_entries(space)]
    with temp_dirs() as dirs:
        fp32 = [tempfile.mkdtemp(prefix="ppufo_fp32_") for _ in names]
        int8 = [tempfile.mkdtemp(prefix="ppufo_int8_") for _ in names]
        dirs += fp32 + int8
        export_float_probes(cfg, space, task, args.copies, fp32)
        export_int8_probes(cfg, task, args.copies, int8)
        ms = time_model_dirs(fp32 + int8, ["cpu_x86"] * len(names) + ["cpu_x86_int8"] * len(names), 1, 10,
                             args.repeats, 1, "thread_cpu", args.rounds, 0.1)
    f, q = ms[:len(names)], ms[len(names):]
    print(f"{'entry':<16}{'fp32 ms':>9}{'int8 ms':>9}{'fp32/int8':>10}")
    for i, name in enumerate(names):
        a, b = (f[i], q[i]) if i == 0 else ((f[i] - f[0]) / args.copies, (q[i] - q[0]) / args.copies)
        print(f"{name:<16}{a:9.4f}{b:9.4f}{a / b:10.2f}")


if __name__ == "__main__":
    main()
