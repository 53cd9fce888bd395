"""The runtime an exported model is served with: Paddle Inference or ONNX Runtime.

One factory for predict_rec (deploy configs: ``Global.use_onnx``), the service (``ppufo-serve
--backend``) and the chip search (``ppufo.chips.CHIPS[chip]["backend"]``), so the three build a
backend's predictor alike. ONNX Runtime runs <model_dir>/inference.onnx, converted from the
exported model on first use (onnx_export.onnx_model).
"""
from ..utils.errors import ConfigError
from .onnx_export import onnx_model
from .predictor import FeaturePredictor, OnnxPredictor

BACKENDS = ("paddle", "onnxruntime")
RUNTIME_NAMES = {"paddle": "Paddle Inference", "onnxruntime": "ONNX Runtime"}
ORT_OPTIONS = ("device", "cpu_threads", "device_id")


def check_backend(backend, where="backend"):
    if backend not in BACKENDS:
        raise ConfigError(f"{where}={backend!r}: expected one of {list(BACKENDS)}")
    return backend


def config_backend(cfg):
    """The backend of a validated deploy config: Global.use_onnx (PaddleClas' key) picks ONNX Runtime."""
    return "onnxruntime" if cfg["Global"]["use_onnx"] else "paddle"


def build_predictor(model_dir, backend="paddle", max_batch_size=None, convert=True, **options):
    """The ``backend`` predictor of an exported model: images [N, 3, H, W] -> L2-normalised features.

    paddle: FeaturePredictor, ``options`` those of predictor.config_calls; ``max_batch_size`` sizes
    TensorRT's engines. onnxruntime: OnnxPredictor on inference.onnx (converted if missing or stale),
    ``options`` only device, cpu_threads and device_id; its batch is dynamic, so ``max_batch_size`` is
    not needed. ``convert=False`` refuses a missing or stale ONNX file (saying how to convert) instead
    of converting. A Paddle Inference option given to ONNX Runtime is an error, not silently dropped."""
    check_backend(backend)
    if backend == "paddle":
        if max_batch_size is not None:
            options["max_batch_size"] = max_batch_size
        return FeaturePredictor(model_dir, **options)
    extra = sorted(set(options) - set(ORT_OPTIONS))
    if extra:
        raise ConfigError(f"backend onnxruntime: {extra} are Paddle Inference options; ONNX Runtime takes "
                          f"{list(ORT_OPTIONS)}")
    return OnnxPredictor(model_dir, onnx_file=onnx_model(model_dir, convert), **options)
