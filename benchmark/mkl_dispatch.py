"""MKL's kernel choice on this CPU: Paddle's dygraph training step and matmul with MKL's own
choice (MKL_DEBUG_CPU_TYPE empty) against the AVX2 kernels ppufo asks for on AMD CPUs
(MKL_DEBUG_CPU_TYPE=5, see ppufo/utils/cpu_dispatch.py). MKL reads the variable once when it
loads, so each side runs in its own process; the two alternate, best of --rounds each.

python benchmark/mkl_dispatch.py [--threads 0] [--rounds 2]
"""
import argparse
import json
import os
import subprocess
import sys
import time


def measure(threads):
    """One side, in this process: 2048² fp32 matmul GFLOP/s and the quickstart-sized training
    step (ViT-Tiny depth 6, 80 images at 64x64, forward + backward + AdamW) in seconds."""
    import paddle

    from ppufo.arch.backbone import build_backbone
    from ppufo.utils.device import resolve_cpu_threads, set_cpu_threads
    paddle.set_device("cpu")
    set_cpu_threads(resolve_cpu_threads(threads))
    a, b = paddle.randn([2048, 2048]), paddle.randn([2048, 2048])
    paddle.matmul(a, b).numpy()
    mm = min(_timed(lambda: paddle.matmul(a, b).numpy()) for _ in range(5))
    paddle.seed(0)
    model = build_backbone({"name": "ViT_tiny_patch16", "depth": 6}, img_size=[64, 64])
    opt = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    x = paddle.randn([80, 3, 64, 64])

    def step():
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
    for _ in range(3):
        step()
    steps = sorted(_timed(step) for _ in range(10))
    return {"matmul_gflops": 2 * 2048 ** 3 / mm / 1e9, "step_s": steps[len(steps) // 2],
            "threads": resolve_cpu_threads(threads)}


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_side(value, threads):
    env = dict(os.environ, MKL_DEBUG_CPU_TYPE=value)
    out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(threads)], env=env,
                         capture_output=True, text=True, timeout=900, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=0, help="Paddle CPU threads (0 = every usable core)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.threads)))
        return
    from ppufo.utils.cpu_dispatch import cpu_info
    vendor, flags = cpu_info()
    sides = {"MKL's choice": "", "AVX2 kernels": "5"}
    best = {name: None for name in sides}
    for _ in range(a.rounds):
        for name, value in sides.items():
            r = run_side(value, a.threads)
            if best[name] is None or r["step_s"] < best[name]["step_s"]:
                best[name] = r
    for name, r in best.items():
        print(f"{name:13s} (MKL_DEBUG_CPU_TYPE={sides[name]!r}): matmul {r['matmul_gflops']:.1f} GFLOP/s, "
              f"quickstart step {r['step_s']:.3f} s")
    own, avx2 = best["MKL's choice"], best["AVX2 kernels"]
    print(f"{own['step_s'] / avx2['step_s']:.2f}x faster quickstart training step with MKL's AVX2 kernels "
          f"({avx2['matmul_gflops'] / own['matmul_gflops']:.2f}x matmul; {vendor or 'unknown CPU'}, "
          f"{'AVX2' if 'avx2' in flags else 'no AVX2'}, {own['threads']} threads)")


if __name__ == "__main__":
    main()
