"""Activation memory of a ViT-B/16 training step on this CPU, without and with per-block recompute
(Arch.Backbone.recompute), each measured in a fresh subprocess, next to ppufo.arch.memory_plan's
estimate for the same model, batch and precision (fp32; on CPU Paddle's fused attention is the
matmul-softmax-matmul path, so the plan uses attention="math").

Measured: peak resident memory (VmHWM, reset through /proc/self/clear_refs) during one step minus
the resident memory just before it, and next to it the peak of Paddle's own host allocator
(core.host_memory_stat_peak_value). A first step (on two images) runs before, so parameters,
gradients (kept allocated, zeroed), the input batch and oneDNN's kernel caches are in the baseline.
Paddle's CPU allocator takes tensors from malloc: the children run with a fixed glibc mmap
threshold (MALLOC_MMAP_THRESHOLD_=128 KiB), so a freed tensor leaves the resident set at once
instead of staying in the heap, and the resident peak is the live tensors' (on a GPU the caching
allocator's fragmentation is what the plan's margin is for).

python benchmark/train_memory.py [--batch 16] [--size 224] [--drop_path 0.1]
"""
import argparse
import json
import os
import subprocess
import sys
import time


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def child(a):
    from ppufo.arch.backbone import build_backbone  # ppufo before paddle: it configures MKL
    import paddle
    from paddle.base import core
    paddle.set_device("cpu")
    paddle.seed(0)
    model = build_backbone({"name": "ViT_base_patch16", "drop_path_rate": a.drop_path,
                            "recompute": a.recompute}, img_size=[a.size, a.size])
    model.train()
    opt = paddle.optimizer.SGD(learning_rate=0.01, parameters=model.parameters())  # no state
    x = paddle.randn([a.batch, 3, a.size, a.size])

    def step(x):
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.clear_grad()  # set_to_zero: the gradients stay allocated (baseline)
        return float(loss)

    step(x[:2])  # allocates the gradients and warms oneDNN up
    base, alloc_base = status("VmRSS"), core.host_memory_stat_current_value("Allocated", 0)
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    t = time.perf_counter()
    step(x)
    print(json.dumps({"rss": status("VmHWM") - base, "seconds": time.perf_counter() - t,
                      "allocated": core.host_memory_stat_peak_value("Allocated", 0) - alloc_base}))


def plan(a):
    from ppufo.arch.backbone import build_backbone
    import numpy as np
    import paddle
    from ppufo.arch.memory_plan import backbone_memory, vit_blocks
    with paddle.LazyGuard():
        model = build_backbone({"name": "ViT_base_patch16", "drop_path_rate": a.drop_path}, img_size=[a.size] * 2)
    grad_temp = 4 * max(int(np.prod(p.shape)) for p in model.parameters())  # accumulated into .grad
    out = {}
    for rc in (False, True):
        m = backbone_memory(model, vit_blocks(model), [a.size] * 2, a.batch, "fp32", "math", rc)
        out[rc] = m["saved"] + m["working"] + grad_temp
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--drop_path", type=float, default=0.1)
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    measured = {}
    for rc in (False, True):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--batch", str(a.batch), "--size",
               str(a.size), "--drop_path", str(a.drop_path)] + (["--recompute"] if rc else [])
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if r.returncode:
            sys.exit(f"step with recompute={rc} failed:\n{r.stderr[-2000:]}")
        measured[rc] = json.loads(r.stdout.strip().splitlines()[-1])
    est = plan(a)
    mb = 2 ** 20
    print(f"ViT-B/16 {a.size}x{a.size}, batch {a.batch}, DropPath {a.drop_path}, fp32 on CPU, one training step")
    print(f"  {'':<14}{'resident peak':>15}{'allocator peak':>16}{'plan':>10}{'plan/resident':>15}{'step':>8}")
    for rc in (False, True):
        m = measured[rc]
        print(f"  {'recompute' if rc else 'no recompute':<14}{m['rss'] / mb:>12.0f} MB{m['allocated'] / mb:>13.0f} MB"
              f"{est[rc] / mb:>7.0f} MB{est[rc] / m['rss']:>15.2f}{m['seconds']:>7.1f}s")
    off = max(abs(est[rc] / measured[rc]["rss"] - 1) for rc in (False, True))
    print(f"{measured[False]['rss'] / measured[True]['rss']:.1f}x less activation memory with recompute "
          f"(plan within {100 * off:.0f}% of measured; ViT-B/16 {a.size}, batch {a.batch}, fp32 CPU)")


if __name__ == "__main__":
    main()
