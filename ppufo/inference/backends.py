"""The runtime an exported model is served with: Paddle Inference or ONNX Runtime.

One factory for predict_rec (deploy configs: ``Global.use_onnx``), the service (``ppufo-serve
--backend``) and the chip search (``ppufo.chips.CHIPS[chip]["backend"]``), so the three build a
backend's predictor alike. ONNX Runtime runs <model_dir>/inference.onnx, converted from the
exported model on first use (onnx_export.onnx_model). ``auto`` (predict_rec's and the service's
default) serves a small model on CPU with ONNX Runtime, where it is faster here (docs/deploy.md),
and everything else with Paddle Inference.
"""
import importlib.util
import os

from ..utils.errors import ConfigError
from ..utils.logger import get_logger
from .onnx_export import onnx_model, onnx_state
from .predictor import FeaturePredictor, OnnxPredictor, load_model_info, model_format, small_model

BACKENDS = ("auto", "paddle", "onnxruntime")
USE_ONNX = {"auto": "auto", "paddle": False, "onnxruntime": True}  # backend -> deploy config's Global.use_onnx
RUNTIME_NAMES = {"paddle": "Paddle Inference", "onnxruntime": "ONNX Runtime"}
ORT_OPTIONS = ("device", "cpu_threads", "device_id")


def check_backend(backend, where="backend"):
    if backend not in BACKENDS:
        raise ConfigError(f"{where}={backend!r}: expected one of {list(BACKENDS)}")
    return backend


def config_backend(cfg):
    """The backend of a validated deploy config: Global.use_onnx (PaddleClas' key) true picks ONNX
    Runtime, false Paddle Inference, auto (the default) the faster of the two (``auto_backend``)."""
    use = cfg["Global"]["use_onnx"]
    return "auto" if use == "auto" else "onnxruntime" if use else "paddle"


def installed(module):
    return importlib.util.find_spec(module) is not None


def auto_backend(model_dir, device="cpu", small_model_mb=64, use_tensorrt=False, precision="fp32", **_):
    """(backend, why) for ``auto``: ONNX Runtime for a model with weights under ``small_model_mb`` MB
    on CPU (quickstart ViT-Ti: Paddle Inference 1.5-1.75x slower, benchmark/infer_speed.py), when
    onnxruntime is installed and the ONNX file is there or paddle2onnx can write it; Paddle Inference
    otherwise (ViT-B and larger: the two within 2%; GPU, TensorRT and other chips: Paddle's; an int8
    model: its oneDNN int8 kernels are Paddle Inference's)."""
    model_format(model_dir)  # a clear error for a folder with no exported model
    mb = os.path.getsize(os.path.join(model_dir, "inference.pdiparams")) / 2 ** 20
    if is_int8(model_dir):
        return "paddle", "an int8 model (ppufo-quantize): oneDNN int8 kernels"
    if precision == "int8":  # Paddle Inference then refuses a float model, rather than ORT serving it in fp32
        return "paddle", f"precision int8 on {device}"
    if device != "cpu" or use_tensorrt:
        return "paddle", f"device {device}{' with TensorRT' if use_tensorrt else ''}"
    if not small_model(model_dir, device, small_model_mb):
        return "paddle", f"weights {mb:.1f} MB, not under small_model_mb {small_model_mb}"
    if not installed("onnxruntime"):
        return "paddle", "onnxruntime is not installed"
    if onnx_state(model_dir) is not None and not installed("paddle2onnx"):
        return "paddle", "paddle2onnx is not installed to convert the model"
    return "onnxruntime", f"weights {mb:.1f} MB, under small_model_mb {small_model_mb}: faster on CPU"


def is_int8(model_dir):
    """Whether ``model_dir`` holds an int8 model written by ppufo-quantize (inference.yml precision)."""
    info = load_model_info(model_dir)
    return isinstance(info, dict) and info.get("precision") == "int8"


def build_predictor(model_dir, backend="auto", max_batch_size=None, convert=True, **options):
    """The ``backend`` predictor of an exported model: images [N, 3, H, W] -> L2-normalised features.

    auto: ``auto_backend`` picks one and the choice is logged; ``options`` are Paddle Inference's (used
    if it is picked; ONNX Runtime takes its three), and a failed conversion falls back to Paddle
    Inference with a warning. paddle: FeaturePredictor, ``options`` those of predictor.config_calls; ``max_batch_size`` sizes
    TensorRT's engines. onnxruntime: OnnxPredictor on inference.onnx (converted if missing or stale),
    ``options`` only device, cpu_threads and device_id; its batch is dynamic, so ``max_batch_size`` is
    not needed. ``convert=False`` refuses a missing or stale ONNX file (saying how to convert) instead
    of converting. A Paddle Inference option given to ONNX Runtime is an error, not silently dropped."""
    check_backend(backend)
    if backend == "auto":
        backend, why = auto_backend(model_dir, **options)
        log = get_logger()
        log.info(f"{model_dir}: {RUNTIME_NAMES[backend]} ({why}; backend auto)")
        if backend == "onnxruntime":
            try:
                return OnnxPredictor(model_dir, onnx_file=onnx_model(model_dir, convert),
                                     **{k: v for k, v in options.items() if k in ORT_OPTIONS})
            except (RuntimeError, FileNotFoundError) as e:
                log.warning(f"{e}; serving with Paddle Inference instead")
                backend = "paddle"
    if backend == "paddle":
        if max_batch_size is not None:
            options["max_batch_size"] = max_batch_size
        return FeaturePredictor(model_dir, **options)
    if is_int8(model_dir):  # paddle2onnx would write a QDQ graph; that route is not built or measured here
        raise ConfigError(f"{model_dir}: an int8 model runs with Paddle Inference (backend paddle or auto), "
                          f"not ONNX Runtime")
    extra = sorted(set(options) - set(ORT_OPTIONS))
    if extra:
        raise ConfigError(f"backend onnxruntime: {extra} are Paddle Inference options; ONNX Runtime takes "
                          f"{list(ORT_OPTIONS)}")
    return OnnxPredictor(model_dir, onnx_file=onnx_model(model_dir, convert), **options)
