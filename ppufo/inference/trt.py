"""TensorRT for exported models: the refusal (ppufo.chips.tensorrt_problem), the conversion and
its on-disk cache.

Two routes, as Paddle 3 documents them (docs/deploy.md#tensorrt):

- ``inference.json`` (PIR, what tools/export_model.py writes): ``paddle.tensorrt.convert`` builds
  the engines and saves a program holding ``tensorrt_engine`` ops, which a plain GPU predictor then
  runs. ``Config.enable_tensorrt_engine`` is for ``.pdmodel`` programs only; the PIR optimiser never
  consults it, so a PIR model with it runs without TensorRT and says nothing.
- ``inference.pdmodel`` (legacy, exported elsewhere): ``enable_tensorrt_engine`` with
  ``use_static`` serialising the engines into a cache folder.

Either way the engines live in ``<trt_cache_dir>/<entry>``, keyed by the model files, the shapes,
the precision and the Paddle/TensorRT/GPU they were built with, and are reused by later predictors.
"""
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

from ..chips import TRT_ASKED as ASKED, TRT_INSTEAD as INSTEAD, tensorrt_env, tensorrt_problem
from ..utils.dist import exclusive

PIR_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
WORKSPACE = 1 << 30
DONE = "ppufo_trt.json"  # written last: an entry without it is incomplete and rebuilt


class TensorRTUnavailable(ValueError):
    """TensorRT cannot be applied as asked; raised instead of running without it."""


def batch_shapes(image_shape, max_batch_size, opt_batch_size=None):
    """TensorRT's (min, opt, max) input shapes: batch 1, the serving batch, the largest batch."""
    opt = max_batch_size if opt_batch_size is None else opt_batch_size
    if not 1 <= opt <= max_batch_size:
        raise ValueError(f"TensorRT optimum batch {opt}: expected 1..{max_batch_size} (the largest batch)")
    return tuple([b, *map(int, image_shape)] for b in (1, opt, max_batch_size))


def convert_plan(image_shape, precision, max_batch_size, opt_batch_size=None, min_subgraph_size=3):
    """The ``paddle.tensorrt`` Input/TensorRTConfig arguments for the PIR route (plain data)."""
    lo, opt, hi = batch_shapes(image_shape, max_batch_size, opt_batch_size)
    return {"min_input_shape": lo, "optim_input_shape": opt, "max_input_shape": hi,
            "precision_mode": PIR_PRECISION[precision], "min_subgraph_size": min_subgraph_size,
            "workspace_size": WORKSPACE}


def model_files(model_dir, model_format):
    program = "inference.json" if model_format == "pir" else "inference.pdmodel"
    return [os.path.join(model_dir, f) for f in (program, "inference.pdiparams")]


def is_quantized(model_dir, model_format):
    """Whether the program holds (fake) quantise ops, as PaddleSlim's quantised exports do."""
    with open(model_files(model_dir, model_format)[0], "rb") as f:
        data = f.read()
    return b"quantize_linear" in data or b"fake_quantize" in data or b"fake_channel_wise_quantize" in data


def entry_dir(model_dir, model_format, plan, env, cache_dir=None):
    """The cache folder for this model + plan + build: ``<cache_dir>/<precision>_b<min>-<opt>-<max>_<key>``."""
    h = hashlib.sha256()
    for path in model_files(model_dir, model_format):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    build = {k: env.get(k) for k in ("paddle", "trt_compiled", "gpu_name")}
    h.update(json.dumps([model_format, plan, build], sort_keys=True, default=list).encode())
    b = "-".join(str(s[0]) for s in (plan["min_input_shape"], plan["optim_input_shape"], plan["max_input_shape"]))
    root = cache_dir or os.path.join(model_dir, "_trt_cache")
    return os.path.abspath(os.path.join(root, f"{plan['precision_mode'].lower()}_b{b}_{h.hexdigest()[:16]}"))


def _program_text(entry):
    path = os.path.join(entry, "inference.json")
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        return f.read()


def _makedirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise TensorRTUnavailable(f"TensorRT cache folder: {e}; set Global.trt_cache_dir to a writable "
                                  f"folder") from None


def _usable(entry):
    """A complete entry whose program holds TensorRT engines that are still on disk."""
    text = _program_text(entry)
    if not os.path.isfile(os.path.join(entry, DONE)):
        return False
    return "tensorrt_engine" in text and all(os.path.isfile(p) for p in re.findall(r'"([^"]+\.trt)"', text))


def pir_program(model_dir, plan, entry, device_id=0, convert=None):
    """``entry`` holding the TensorRT program of the PIR model in ``model_dir``: reused when complete,
    else converted (``convert(model_prefix, out_prefix, plan, device_id, log)``). Returns whether it
    was built now."""
    _makedirs(os.path.dirname(entry))
    # another process building the same entry: wait for it, then reuse what it built
    with exclusive(entry + ".lock", f"building the TensorRT engines in {entry}"):
        if _usable(entry):
            return False
        shutil.rmtree(entry, ignore_errors=True)
        os.makedirs(entry)
        (convert or _convert)(os.path.join(os.path.abspath(model_dir), "inference"),
                              os.path.join(entry, "inference"), plan, device_id, os.path.join(entry, "convert.log"))
        if "tensorrt_engine" not in _program_text(entry):
            raise TensorRTUnavailable(
                f"{ASKED}, but paddle.tensorrt.convert put no part of {model_dir} into TensorRT "
                f"(min_subgraph_size {plan['min_subgraph_size']}; log: {entry}/convert.log). Lower "
                f"Global.min_subgraph_size{INSTEAD}")
        with open(os.path.join(entry, DONE), "w") as f:
            json.dump({"model_dir": os.path.abspath(model_dir), "plan": plan}, f, indent=1)
    return True


def _convert(model_prefix, out_prefix, plan, device_id, log):
    """Run the conversion in a child process: it fills the global scope and Paddle flags, and
    ``convert`` always builds on CUDAPlace(0), so the child sees only the target GPU."""
    env = dict(os.environ)
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    env["CUDA_VISIBLE_DEVICES"] = visible[device_id] if device_id < len(visible) else str(device_id)
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "ppufo.inference.trt", model_prefix, out_prefix, json.dumps(plan)],
                            env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc:
        with open(log) as f:
            tail = "".join(f.readlines()[-15:])
        raise TensorRTUnavailable(f"{ASKED}, but paddle.tensorrt.convert failed on {model_prefix}.json "
                                  f"(exit {rc}; log {log}); nothing ran without TensorRT. Log tail:\n{tail}")


def prepare(model_dir, model_format, image_shape, precision="fp16", max_batch_size=8, opt_batch_size=None,
            min_subgraph_size=3, device_id=0, cache_dir=None, env=None, convert=None):
    """(cache entry, folder the predictor loads): refuses (TensorRTUnavailable) where TensorRT cannot
    run; converts PIR models once per entry."""
    env = env or tensorrt_env(device_id)
    why = tensorrt_problem(env, model_format, precision, is_quantized(model_dir, model_format))
    if why:
        raise TensorRTUnavailable(why)
    plan = convert_plan(image_shape, precision, max_batch_size, opt_batch_size, min_subgraph_size)
    entry = entry_dir(model_dir, model_format, plan, env, cache_dir)
    if model_format == "legacy":
        _makedirs(entry)  # Paddle serialises the engines here (use_static)
        return entry, model_dir
    pir_program(model_dir, plan, entry, device_id, convert)
    return entry, entry


def main(argv=None):
    """python -m ppufo.inference.trt MODEL_PREFIX OUT_PREFIX PLAN_JSON (the child of _convert)."""
    model_prefix, out_prefix, plan = argv or sys.argv[1:]
    plan = json.loads(plan)
    # only TensorRT builds ship paddle.tensorrt (tensorrt_problem checked it before this child ran)
    converter = importlib.import_module("paddle.tensorrt.converter")
    export = importlib.import_module("paddle.tensorrt.export")
    # Keep the engines inside the entry whatever the release: older paddle.tensorrt wrote them to
    # ~/.pp_trt_cache under a hash of the graph text (not the weights), shared by every model.
    engines = out_prefix + "_engines"
    os.makedirs(engines, exist_ok=True)
    converter.get_cache_path = lambda *_: engines
    inp = export.Input(min_input_shape=tuple(plan["min_input_shape"]),
                       optim_input_shape=tuple(plan["optim_input_shape"]),
                       max_input_shape=tuple(plan["max_input_shape"]))
    config = export.TensorRTConfig(inputs=[inp], min_subgraph_size=plan["min_subgraph_size"],
                                   precision_mode=export.PrecisionMode[plan["precision_mode"]],
                                   workspace_size=plan["workspace_size"])
    config.save_model_dir = out_prefix
    export.convert(model_prefix, config)


if __name__ == "__main__":
    main()
