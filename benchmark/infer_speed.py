"""Inference latency of the same model in dygraph vs Paddle Inference (CPU, oneDNN), one run.

python benchmark/infer_speed.py [--repeats 10]
Last line: the ViT-B/16 224 batch-1 ratio. ONNX Runtime is not measured: paddle2onnx is not in
the pinned stack.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "deploy", "python"))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from ppufo.arch import build_model  # noqa: E402
from ppufo.engine.exporter import export_task  # noqa: E402
from ppufo.utils.config import load_config  # noqa: E402
from predictor import FeaturePredictor  # noqa: E402


def median_time(fn, x, repeats):
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def compare(label, overrides, batches, repeats):
    cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), overrides)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    d = tempfile.mkdtemp()
    export_task(model, "person", cfg, d)
    pred = FeaturePredictor(d, enable_mkldnn=True, cpu_threads=2, max_batch_size=max(batches))
    c, h, w = cfg["Global"]["image_shape"]
    ratios = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, c, h, w)).astype("float32")
        with paddle.no_grad():
            dy = median_time(lambda a: model.embed(paddle.to_tensor(a), "person").numpy(), x, repeats)
            diff = np.abs(model.embed(paddle.to_tensor(x), "person").numpy() - pred(x)).max()
        pi = median_time(pred, x, repeats)
        ratios[b] = dy / pi
        print(f"{label} b{b}: dygraph {dy * 1e3:8.1f} ms, Paddle Inference (oneDNN) {pi * 1e3:8.1f} ms, "
              f"{dy / pi:.2f}x, max |diff| {diff:.1e}")
    return ratios


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    paddle.set_device("cpu")
    compare("quickstart ViT-Ti (6 blocks, 64x64)", [], (1, 8), a.repeats)
    vitb = compare("ViT-B/16 224", ["Global.image_shape=[3,224,224]", "Arch.Backbone.name=ViT_base_patch16",
                                     "Arch.Backbone.depth=12", "DataLoader.Train.transforms=[]"], (1, 8), a.repeats)
    print(f"{vitb[1]:.1f}x Paddle Inference vs dygraph (ViT-B/16 224, b1, oneDNN)")


if __name__ == "__main__":
    main()
