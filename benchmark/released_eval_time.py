"""How long the released UFO model (ViT-L/16 at 384) takes to evaluate on this machine's CPU.

python benchmark/released_eval_time.py [--threads 2] [--repeats 3]

Exports configs/ufo_released.yaml's model (random weights: the speed does not depend on them) to
Paddle Inference with oneDNN and times batch 1 and batch 8, interleaved, best of --repeats
after a warm-up. The 12 reference sets hold 421,154 images (shared/ufo_reference.md; faces
embedded once, as the reference does), so images/s gives the evaluation time here. The
FLOPs come from the model's shapes. Last line: batch 8 against batch 1, then the time at the
faster batch.
"""
import argparse
import os
import tempfile
import time

import ppufo  # noqa: F401  (before paddle: it configures MKL)
import numpy as np
import paddle

from ppufo.arch import build_model
from ppufo.engine.exporter import export_task
from ppufo.inference.predictor import FeaturePredictor
from ppufo.utils.config import load_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REFERENCE_IMAGES = 4 * 12000 + 2 * 14000 + 19281 + 93820 + 13257 + 19777 + 138517 + 60502


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    paddle.set_device("cpu")
    cfg = load_config(os.path.join(ROOT, "configs", "ufo_released.yaml"), ["Global.device=cpu"])
    paddle.seed(0)
    model = build_model(cfg)  # no classifiers: an embedding model, as the released file
    model.eval()
    gflops = model.backbone.forward_flops() / 1e9  # matmuls, attention and the patch conv
    shape = cfg["Global"]["image_shape"]
    with tempfile.TemporaryDirectory() as d:  # 1.2 GB of weights
        start = time.perf_counter()
        export_task(model, "person", cfg, d)
        print(f"exported ViT-L/16-384 in {time.perf_counter() - start:.0f} s", flush=True)
        del model
        pred = FeaturePredictor(d, enable_mkldnn=True, cpu_threads=a.threads, max_batch_size=8)
    rs = np.random.RandomState(0)
    batches = {b: rs.uniform(-1, 1, (b, *shape)).astype("float32") for b in (1, 8)}
    for x in batches.values():
        pred(x)  # warm-up: oneDNN builds its kernels per shape
    best = {b: float("inf") for b in batches}
    for _ in range(a.repeats):
        for b, x in batches.items():
            t = time.perf_counter()
            pred(x)
            best[b] = min(best[b], (time.perf_counter() - t) / b)
    for b, s in best.items():
        print(f"batch {b}: {s:.2f} s per image, {1 / s:.2f} images/s, {gflops / s:.0f} GFLOP/s "
              f"({gflops:.0f} GFLOP per image), {a.threads} threads", flush=True)
    fastest = min(best.values())
    print(f"{best[1] / best[8]:.2f}x images/s at batch 8 vs 1: ViT-L/16-384 at {1 / fastest:.2f} images/s on "
          f"{a.threads} CPU threads, so the 12 reference sets ({REFERENCE_IMAGES:,} images) take "
          f"{REFERENCE_IMAGES * fastest / 3600:.0f} h here")


if __name__ == "__main__":
    main()
