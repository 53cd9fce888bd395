"""Training throughput of a ViT-B/16 step (forward + backward + SGD) on this CPU, as achieved
GFLOP/s against the machine's fp32 matmul on all the threads the step uses, both measured in
this run. The step is also timed on one Paddle thread (Paddle's own default) for comparison.

python benchmark/train_throughput.py [--batch 8] [--size 224] [--steps 5] [--threads 0]
"""
import argparse
import time

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle

from ppufo.arch.backbone import build_backbone
from ppufo.utils.device import resolve_cpu_threads, set_cpu_threads


def best_time(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(threads, n=2048, repeats=5):
    """{library: GFLOP/s} of an n x n fp32 matmul: Paddle on ``threads`` threads, and numpy's
    BLAS on all of its threads (a second opinion on what the cores can do)."""
    set_cpu_threads(threads)
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    x, y = a.numpy(), b.numpy()
    flop = 2 * n ** 3
    return {"paddle": flop / best_time(lambda: paddle.matmul(a, b).numpy(), repeats) / 1e9,
            "numpy": flop / best_time(lambda: np.matmul(x, y), repeats) / 1e9}


def train_step_time(model, batch, size, steps, warmup=2):
    opt = paddle.optimizer.Momentum(learning_rate=0.01, momentum=0.9, parameters=model.parameters())
    x = paddle.randn([batch, 3, size, size])
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="Paddle CPU threads (0 = every usable core)")
    a = p.parse_args()
    paddle.set_device("cpu")
    threads = resolve_cpu_threads(a.threads)
    paddle.seed(0)
    model = build_backbone({"name": "ViT_base_patch16"}, img_size=[a.size, a.size])
    model.train()
    flops = 3 * model.forward_flops() * a.batch  # backward ~ 2x forward
    set_cpu_threads(1)
    one = train_step_time(model, a.batch, a.size, a.steps)
    set_cpu_threads(threads)
    step = train_step_time(model, a.batch, a.size, a.steps)
    peak = matmul_gflops(threads)
    best = max(peak.values())
    achieved = flops / step / 1e9
    print(f"ViT-B/16 {a.size}x{a.size}, batch {a.batch}, median of {a.steps} steps:")
    print(f"  1 thread:   {one:.2f} s/step, {a.batch / one:.1f} images/s, {flops / one / 1e9:.1f} GFLOP/s")
    print(f"  {threads} thread(s): {step:.2f} s/step, {a.batch / step:.1f} images/s, {achieved:.1f} GFLOP/s "
          f"({one / step:.2f}x the 1-thread step)")
    print(f"fp32 matmul 2048x2048 on {threads} thread(s): Paddle {peak['paddle']:.1f} GFLOP/s, "
          f"numpy {peak['numpy']:.1f} GFLOP/s (the larger is the baseline)")
    print(f"{achieved / best:.2f}x of all-core matmul GFLOP/s (ViT-B/16 {a.size}, b{a.batch}, {threads} threads)")


if __name__ == "__main__":
    main()
