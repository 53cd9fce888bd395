"""Deploy targets ("chips"): the one list of them, the runtime and options that run a model on
each (Paddle Inference, or ONNX Runtime for ``cpu_x86_ort``), their per-layer latency tables
(package data: ppufo/chips/tables/<chip>.json, see ppufo/nas/latency_table.py), and whether each
can run here (``chip_absent``; TensorRT's requirements are ``tensorrt_problem``, which the
predictor also enforces). Plain data: importing this module imports no paddle."""
import importlib.util
import os
import platform

DEVICES = ("cpu", "gpu", "xpu", "npu")  # Paddle Inference devices

# chip -> predictor options (ppufo.inference.backends.build_predictor: "backend" picks the runtime,
# Paddle Inference by default); None where a latency can come only from a table (gpu_trt_int8 needs
# a PaddleSlim-quantised model; onnx names no device). cpu_x86_int8 runs a model quantised by
# ppufo-quantize on oneDNN's int8 kernels; precision int8 makes its predictor refuse a float model.
CHIPS = {
    "cpu_x86": {"device": "cpu", "enable_mkldnn": True},
    "cpu_x86_ort": {"backend": "onnxruntime", "device": "cpu"},
    "cpu_x86_int8": {"device": "cpu", "enable_mkldnn": True, "precision": "int8"},
    "gpu": {"device": "gpu"},
    "gpu_trt_fp16": {"device": "gpu", "use_tensorrt": True, "precision": "fp16"},
    "gpu_trt_int8": None,
    "xpu": {"device": "xpu"},
    "npu": {"device": "npu"},
    "arm": {"device": "cpu", "enable_mkldnn": False},
    "onnx": None,
}
CHIP_NAMES = tuple(CHIPS)
# Search.chip values that name a device rather than a runtime: the search times each subnet on every
# member and picks, per subnet, the faster (docs/chip_search.md#runtime-choice). Not deploy targets:
# the result names the member chip, whose deploy config serves it.
RUNTIME_CHOICES = {"cpu_x86_any": ("cpu_x86", "cpu_x86_ort")}
SEARCH_CHIPS = CHIP_NAMES + tuple(RUNTIME_CHOICES)
# chips that run an int8 model: a subnet is timed on them only once quantised (ppufo.slim), which
# their latency tables' probes are (tools/build_latency_table.py) and the search's candidates are not,
# so the search reads these chips' latency from their tables and simulates the candidates' int8
# accuracy (ppufo.slim.fake_quant; docs/chip_search.md#quantised-candidates)
QUANTIZED_CHIPS = ("cpu_x86_int8", "gpu_trt_int8")
# a float chip -> the int8 chip of the same device (Search.int8_candidates searches both)
INT8_OF = {"cpu_x86": "cpu_x86_int8", "gpu_trt_fp16": "gpu_trt_int8"}
TABLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")


def table_path(chip, path=None):
    """The latency table of ``chip``: ``path`` if given ("{chip}" in it stands for the chip's name, so
    one Search.latency_table names the tables of several chips), else the one shipped with ppufo."""
    return path.replace("{chip}", chip) if path else os.path.join(TABLES, f"{chip}.json")


def runtime_chips(chip):
    """The chips a search on ``chip`` times: a runtime choice's members, else ``chip`` alone."""
    return RUNTIME_CHOICES.get(chip, (chip,))


def measurable(chip):
    return all(CHIPS.get(c) is not None for c in runtime_chips(chip))


def chip_backend(chip):
    """The runtime that times and serves ``chip``: 'paddle' or 'onnxruntime'."""
    return (CHIPS.get(chip) or {}).get("backend", "paddle")


TRT_ASKED = ("TensorRT was asked for (Global.use_tensorrt: true, as in deploy/configs/gpu_trt_fp16.yaml and "
             "gpu_trt_int8.yaml, or Search.chip=gpu_trt_fp16)")
TRT_INSTEAD = ("; or run without TensorRT: deploy/configs/gpu.yaml (CUDA kernels), cpu_x86.yaml, or "
               "Search.chip=gpu / Search.latency=table")


def tensorrt_env(device_id=0):
    """What this Paddle build offers for TensorRT (plain data for ``tensorrt_problem``)."""
    import paddle
    import paddle.inference as pi
    cuda = paddle.is_compiled_with_cuda()
    gpus = paddle.device.cuda.device_count() if cuda else 0
    return {"paddle": f"{paddle.__version__} ({paddle.version.commit[:10]})", "cuda": cuda, "gpus": gpus,
            "device_id": device_id, "trt_compiled": tuple(pi.get_trt_compile_version()),
            "gpu_name": paddle.device.cuda.get_device_name(device_id) if gpus > device_id else None,
            "paddle_tensorrt": importlib.util.find_spec("paddle.tensorrt") is not None,
            "tensorrt_python": importlib.util.find_spec("tensorrt") is not None}


def tensorrt_problem(env, model_format, precision, quantized):
    """Why TensorRT cannot run a ``model_format`` ('pir'/'legacy') model here (a message), or None."""
    asked, instead = TRT_ASKED, TRT_INSTEAD
    if precision == "int8" and not quantized:
        return (f"{asked} in int8, but the model has no quantize_linear ops: int8 needs a PaddleSlim-"
                f"quantised export (quant_post_static or QAT). paddle.tensorrt.convert has no calibration "
                f"for a float model, and the .pdmodel route's calibration mode runs its first predictors "
                f"without int8 engines. Use precision fp16 (gpu_trt_fp16.yaml){instead}")
    if not env["cuda"]:
        return (f"{asked}, but paddlepaddle {env['paddle']} here is a CPU-only build. Install "
                f"paddlepaddle-gpu built with TensorRT, plus TensorRT >= 8.6{instead}")
    if env["gpus"] <= env["device_id"]:
        return (f"{asked}, but GPU {env['device_id']} is not visible ({env['gpus']} CUDA GPU(s); "
                f"CUDA_VISIBLE_DEVICES, driver){instead}")
    if not any(env["trt_compiled"]):
        return (f"{asked}, but paddlepaddle {env['paddle']} was compiled without TensorRT "
                f"(paddle.inference.get_trt_compile_version() is 0.0.0). Install a paddlepaddle-gpu build "
                f"with TensorRT{instead}")
    if model_format == "pir" and not env["paddle_tensorrt"]:
        return (f"{asked}, but the model is a PIR program (inference.json), which TensorRT reaches only "
                f"through paddle.tensorrt.convert, and this paddle has no paddle.tensorrt module "
                f"(built without WITH_TENSORRT){instead}")
    if model_format == "pir" and not env["tensorrt_python"]:
        v = ".".join(map(str, env["trt_compiled"]))
        return (f"{asked}, but paddle.tensorrt.convert needs TensorRT's Python package, which is not "
                f"installed: pip install tensorrt=={v}.* (the version paddle was built with){instead}")
    return None


def chip_absent(chip):
    """Why ``chip`` cannot be timed on this machine with this Paddle build, or None if it can."""
    if chip in RUNTIME_CHOICES:
        return next((f"{c}: {why}" for c in RUNTIME_CHOICES[chip] if (why := chip_absent(c))), None)
    machine = platform.machine().lower()
    if chip in ("cpu_x86", "cpu_x86_ort", "cpu_x86_int8"):
        if machine not in ("x86_64", "amd64", "i686"):
            return f"not an x86 CPU ({machine})"
        missing = [m for m in ("onnxruntime", "paddle2onnx") if importlib.util.find_spec(m) is None]
        if chip == "cpu_x86_ort" and missing:  # the probe is converted with paddle2onnx, timed with ORT
            return f"{' and '.join(missing)} not installed (pip install paddle2onnx onnxruntime)"
        return None
    if chip == "arm":
        return None if machine in ("aarch64", "arm64") else f"not an ARM CPU ({machine})"
    if not measurable(chip):
        return f"{chip} is not timed here; its latency comes from its table"
    import paddle
    if chip == "gpu_trt_fp16":  # timing plain CUDA kernels here would not be a TensorRT latency
        return tensorrt_problem(tensorrt_env(), "pir", "fp16", quantized=False)
    if chip == "gpu":
        ok = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        return None if ok else "no CUDA GPU with a paddlepaddle-gpu build"
    if chip == "xpu":
        return None if paddle.device.is_compiled_with_xpu() else "paddle is not an XPU build"
    present = "npu" in paddle.device.get_all_custom_device_type()
    return None if present else "no npu custom device (paddle-custom-npu)"


def chip_present(chip):
    """Whether ``chip`` can be timed on this machine with this Paddle build (``chip_absent`` says why not)."""
    return chip_absent(chip) is None
