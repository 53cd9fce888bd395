"""Post-training int8 quantisation of a task's feature model, written beside its float export.

For each task: the float model exported as ppufo-export writes it (``<dir>``), then the int8 one
(``<dir>_int8``: inference.pdmodel + inference.pdiparams, a legacy program with quantize_linear /
dequantize_linear ops, which Paddle Inference runs on oneDNN int8 kernels on x86 CPU). Its scales
are calibrated on ``Quant.num_images`` training images of the task drawn with ``Quant.seed``
through the eval transforms (engine.calibrate.task_images). The quantisation runs in a child
process in legacy mode (ptq_job.py; legacy.py says why); this process stays in PIR mode.
inference.yml of the int8 model is the float one's plus ``precision: int8``, ``format: legacy``,
``int8_ops`` and ``calibration`` (how it was calibrated).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import yaml

from ..engine.calibrate import task_images
from ..engine.exporter import export_task
from ..utils.checkpoint import save_checkpoint
from ..utils.config import dump_config
from ..utils.errors import ConfigError
from .legacy import LEGACY_ENV

INT8_SUFFIX = "_int8"
# One scale per weight tensor, not per output channel: Paddle Inference 3.3.1's quant_dequant_onednn_pass
# (ConvertFromINT8ToFP32) reads the per-channel scales of a square weight (in == out, a ViT's
# attention proj) as a conv filter's and applies them along the input axis. Measured on the trained
# quickstart person model: feature cosine to fp32 0.9951 per channel, 0.9996 per tensor (the same
# program run without oneDNN: 0.9998 either way); docs/notes/quantization.md, 2026-12-06 (2).
WEIGHT_QUANTIZE = "abs_max"


def int8_dir(float_dir):
    """Where the int8 model of the float export in ``float_dir`` goes: a sibling, ``<dir>_int8``."""
    return os.path.normpath(float_dir) + INT8_SUFFIX


def check_quant(config):
    """ConfigError naming the Quant key that cannot work (the schema checked types and ranges)."""
    ops = config["Quant"]["int8_ops"]
    if not all(isinstance(o, str) and o for o in ops):
        raise ConfigError(f"Quant.int8_ops: expected a list of Paddle op type names (e.g. [fc]), got {ops!r}")


def run_job(job, work_dir, module="ppufo.slim.ptq_job"):
    """Run ``module`` (ptq_job, or another job that traces legacy programs) on ``job`` in a child
    process with LEGACY_ENV, its output passed on to stderr as it comes (the calibration's progress
    bars); RuntimeError with the output's tail if it fails."""
    path = os.path.join(work_dir, "job.json")
    with open(path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, **LEGACY_ENV)
    child = subprocess.Popen([sys.executable, "-m", module, path], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = b""
    while chunk := os.read(child.stdout.fileno(), 4096):  # chunks, not lines: tqdm redraws with \r
        sys.stderr.write(chunk.decode(errors="replace"))  # a chunk may split a UTF-8 character: replaced
        sys.stderr.flush()
        tail = (tail + chunk)[-3000:]
    if child.wait() != 0:
        raise RuntimeError(f"int8 quantisation of task {job['task']} failed (python -m {module}, "
                           f"exit {child.returncode}):\n{tail.decode(errors='replace')}")


def quantize_task(model, config, task, float_dir, images=None):
    """Export ``task`` of ``model`` to ``float_dir`` and its int8 model to int8_dir(float_dir); returns
    (int8 folder, the calibration images). ``images``: calibration images to use instead of drawing them."""
    check_quant(config)
    q = config["Quant"]
    if images is None:
        images = task_images(config, task, q["num_images"], q["seed"])
    export_task(model, task, config, float_dir)
    out = int8_dir(float_dir)
    with tempfile.TemporaryDirectory(prefix="ppufo_quant_") as work:
        weights = os.path.join(work, "weights")
        save_checkpoint(weights, model.state_dict())  # the child loads exactly these weights
        job_config = dict(config, Global=dict(config["Global"], pretrained_model=weights))
        dump_config(job_config, os.path.join(work, "config.yaml"))
        np.save(os.path.join(work, "images.npy"), images)
        staged = os.path.join(work, "int8")
        run_job({"config": os.path.join(work, "config.yaml"), "task": task, "images": os.path.join(work, "images.npy"),
                 "out_dir": staged, "work_dir": work, "algo": q["algo"], "batch_size": q["batch_size"],
                 "weight_quantize_type": WEIGHT_QUANTIZE}, work)
        write_info(float_dir, staged, config, task, len(images))
        if os.path.isdir(out):  # replaced whole: no file of an older int8 model stays behind
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    return out, images


def int8_info(int8_ops):
    """What inference.yml says of an int8 model: FeaturePredictor runs it on oneDNN's int8 kernels
    for these op types (backends.is_int8 reads ``precision``)."""
    return {"precision": "int8", "format": "legacy", "int8_ops": list(int8_ops)}


def write_info(float_dir, out, config, task, num_images):
    """inference.yml of the int8 model: the float model's, plus how it was quantised."""
    with open(os.path.join(float_dir, "inference.yml")) as f:
        info = yaml.safe_load(f)
    q = config["Quant"]
    sources = [d.get("name") for d in config["Tasks"][task].get("datasets", [])]
    info.update({
        **int8_info(q["int8_ops"]),
        "calibration": {"task": task, "datasets": sources, "images": int(num_images), "seed": q["seed"],
                        "algo": q["algo"], "weights": WEIGHT_QUANTIZE,
                        "transforms": "the eval transforms (as 'transforms' above)"},
    })
    with open(os.path.join(out, "inference.yml"), "w") as f:
        yaml.safe_dump(info, f, sort_keys=False)
