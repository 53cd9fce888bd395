"""Training throughput of a ViT-B/16 step (forward + backward + SGD) on this machine, as achieved
GFLOP/s next to the machine's fp32 matmul GFLOP/s measured in the same run.

python benchmark/train_throughput.py [--batch 8] [--size 224] [--steps 5]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import paddle  # noqa: E402

from ppufo.arch.backbone import build_backbone  # noqa: E402


def matmul_gflops(n=2048, repeats=5):
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    paddle.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        paddle.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


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
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    paddle.set_device("cpu")
    model = build_backbone({"name": "ViT_base_patch16"}, img_size=[a.size, a.size])
    model.train()
    step = train_step_time(model, a.batch, a.size, a.steps)
    flops = 3 * model.forward_flops() * a.batch  # backward ~ 2x forward
    achieved = flops / step / 1e9
    peak = matmul_gflops()
    print(f"ViT-B/16 {a.size}x{a.size}, batch {a.batch}: {step:.2f} s/step (median of {a.steps}), "
          f"{a.batch / step:.1f} images/s, {achieved:.1f} GFLOP/s achieved")
    print(f"fp32 matmul 2048x2048 on this CPU: {peak:.1f} GFLOP/s")
    print(f"{achieved / peak:.2f}x of matmul GFLOP/s (ViT-B/16 {a.size}, b{a.batch})")


if __name__ == "__main__":
    main()
