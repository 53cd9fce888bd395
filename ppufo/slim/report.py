"""Float vs int8, side by side: the task's test-set metrics of the two exported models and the
cosine between their features of the same images.

The exported models are scored with ppufo's own Evaluator (same test sets, protocols, metrics and
image order as tools/eval.py) through PredictorModel, which stands where the Evaluator expects a
model and runs a Paddle Inference predictor instead, keeping every feature it returns.
"""
import time

import numpy as np
import paddle

from ..engine.evaluator import Evaluator
from ..inference.predictor import FeaturePredictor
from ..utils.errors import ConfigError


# the results' headline numbers (ReID, VehicleID, Recall@K, verification), compared int8 - float
METRIC_KEYS = ("rank1", "mAP", "recall@1", "accuracy_mean")


class PredictorModel:
    """The part of a model the Evaluator uses (``embed``, ``training``, ``eval``, ``train``), backed
    by ``predictor`` for one task; ``features`` holds what each embed call returned, in order."""

    training = False

    def __init__(self, predictor, task):
        self.predictor, self.task, self.features = predictor, task, []

    def eval(self):
        return self

    def train(self, mode=True):
        if mode:
            raise RuntimeError("PredictorModel: an exported model cannot be trained")

    def embed(self, images, task, normalize=True):
        if task != self.task:
            raise ConfigError(f"the exported model embeds task {self.task!r}, asked for {task!r}")
        feats = self.predictor(images.numpy())  # L2-normalised already, as normalize=True would
        self.features.append(feats)
        return paddle.to_tensor(feats)


def cosine(a, b):
    """{mean, min, images}: cosine of each row of ``a`` with the same row of ``b``."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    c = (a * b).sum(1)
    return {"mean": float(c.mean()), "min": float(c.min()), "images": int(len(c))}


def evaluate_exported(config, predictor, task):
    """(Evaluator summary of ``task``'s test sets, the features in evaluation order)."""
    model = PredictorModel(predictor, task)
    summary = Evaluator(config, model, only=[task]).evaluate(tag="exported")
    return summary, np.concatenate(model.features)


def compare(config, task, float_dir, int8_dir, images=None, **options):
    """The report of one task: test-set metrics float vs int8 with their difference and the feature
    cosine on the test images (``Quant.evaluate``), or the cosine on ``images`` (the calibration
    images) alone. ``options``: FeaturePredictor's, for both models."""
    fp, q = FeaturePredictor(float_dir, **options), FeaturePredictor(int8_dir, **options)
    report = {"task": task, "float": float_dir, "int8": int8_dir}
    if not config["Quant"]["evaluate"]:
        report["cosine"] = dict(cosine(fp(images), q(images)), on="calibration images")
        return report
    (a, fa), (b, fb) = evaluate_exported(config, fp, task), evaluate_exported(config, q, task)
    report["cosine"] = dict(cosine(fa, fb), on="test-set images")
    report["sets"] = [{"set": x["set"], "protocol": x["protocol"], "float": x["headline"], "int8": y["headline"],
                       "delta": {k: float(y[k]) - float(x[k]) for k in METRIC_KEYS if k in x and k in y}}
                      for x, y in zip(a["sets"], b["sets"])]
    return report


def latency(model_dirs, batches=(1, 8), rounds=10, runs=5, **options):
    """{name: {batch: median ms}} of the models ``model_dirs`` ({name: folder}), timed in turn within
    each round (side by side: load from other processes falls on all alike), on random input."""
    preds = {n: FeaturePredictor(d, **options) for n, d in model_dirs.items()}
    shape = next(iter(preds.values())).info["image_shape"]
    out = {n: {} for n in preds}
    for b in batches:
        x = np.random.RandomState(0).rand(b, *shape).astype(np.float32)
        times = {n: [] for n in preds}
        for p in preds.values():  # warm-up: the first runs build the executor and oneDNN's primitives
            for _ in range(3):
                p(x)
        for _ in range(rounds):
            for n, p in preds.items():
                t = time.perf_counter()
                for _ in range(runs):
                    p(x)
                times[n].append((time.perf_counter() - t) / runs * 1000)
        for n in preds:
            out[n][b] = float(np.median(times[n]))
    return out


def format_report(report, lat=None):
    """Lines for the log: cosine, the metric table, latency."""
    c = report["cosine"]
    lines = [f"{report['task']}: int8 {report['int8']} vs float {report['float']}",
             f"  feature cosine on {c['images']} {c['on']}: mean {c['mean']:.5f}, min {c['min']:.5f}"]
    for s in report.get("sets", []):
        d = ", ".join(f"{k} {100 * v:+.2f}" for k, v in s["delta"].items())
        lines.append(f"  {s['set']:<14} float {s['float']:>13}  int8 {s['int8']:>13}  ({d})")
    for name, per_batch in (lat or {}).items():
        lines.append(f"  latency {name:<6} " + "  ".join(f"batch {b}: {ms:.2f} ms" for b, ms in per_batch.items()))
    return lines
