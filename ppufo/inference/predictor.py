"""Paddle Inference feature predictor for models written by tools/export_model.py.

Notes for Paddle 3: ``paddle.jit.save`` writes ``inference.json`` (PIR) + ``inference.pdiparams``;
older exports have ``inference.pdmodel``. ``Config(model_dir, "inference")`` finds either.
``enable_memory_optim()`` breaks PIR models on CPU (memory_optimize_pass error), so it is only
used for legacy models or on GPU, and only when asked. TensorRT: ppufo/inference/trt.py (PIR
models are converted with paddle.tensorrt, legacy ones use enable_tensorrt_engine).
``OnnxPredictor`` runs the same model converted to ONNX with ONNX Runtime; backends.py picks one.
"""
import copy
import inspect
import os

import numpy as np
import yaml

from ..chips import DEVICES
from ..data.transforms import build_transforms
from ..utils.errors import ConfigError
from .trt import batch_shapes, prepare

PRECISIONS = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}


def model_format(model_dir):
    """'pir' (inference.json) or 'legacy' (inference.pdmodel); error naming what is missing."""
    if not os.path.isfile(os.path.join(model_dir, "inference.pdiparams")):
        raise FileNotFoundError(f"{model_dir}: no inference.pdiparams (export with tools/export_model.py)")
    if os.path.isfile(os.path.join(model_dir, "inference.json")):
        return "pir"
    if os.path.isfile(os.path.join(model_dir, "inference.pdmodel")):
        return "legacy"
    raise FileNotFoundError(f"{model_dir}: neither inference.json (Paddle 3 PIR) nor "
                            f"inference.pdmodel (legacy) found")


def load_model_info(model_dir):
    path = os.path.join(model_dir, "inference.yml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: it records image size and preprocessing "
                                f"(written by tools/export_model.py)")
    with open(path) as f:
        return yaml.safe_load(f)


def model_transforms(model_dir, info=None):
    """The model's preprocessing: the pipeline its evaluation built, as the exporter wrote it to
    inference.yml (Compose.to_config), rebuilt by the same build_transforms."""
    info = load_model_info(model_dir) if info is None else info
    path = os.path.join(model_dir, "inference.yml")
    if not isinstance(info, dict) or "transforms" not in info:
        raise ConfigError(f"{path}: no 'transforms' (the eval preprocessing); export the model again "
                          f"with tools/export_model.py")
    return build_transforms(info["transforms"], where=f"{path}: transforms")


def config_calls(image_shape, model_format="pir", device="cpu", enable_mkldnn=True,
                 mkldnn_cache_capacity=10, cpu_threads=2, use_tensorrt=False, precision="fp32",
                 max_batch_size=8, opt_batch_size=None, min_subgraph_size=3, trt_cache_dir=None,
                 ir_optim=True, memory_optim=False, gpu_mem_mb=500, device_id=0):
    """The ``paddle.inference.Config`` calls for these options, as ``[(method, args, kwargs)]``.

    Kept apart from the Config so the GPU/XPU/NPU/TensorRT mapping can be checked on a
    CPU-only build (where those calls fail or are ignored). TensorRT's shapes: batch 1,
    ``opt_batch_size`` (None: ``max_batch_size``), ``max_batch_size``. A PIR model gets no TensorRT
    call here: FeaturePredictor loads its paddle.tensorrt conversion (trt.convert_plan)."""
    import paddle.inference as pi
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: expected one of {DEVICES}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {sorted(PRECISIONS)}")
    if use_tensorrt and device != "gpu":
        raise ValueError(f"use_tensorrt needs device='gpu', got {device!r}")
    if precision != "fp32" and not use_tensorrt:
        raise ValueError(f"precision={precision!r} needs use_tensorrt=True")
    calls = []
    if device == "gpu":
        calls.append(("enable_use_gpu", (gpu_mem_mb, device_id), {}))
        if use_tensorrt:
            lo, opt, hi = batch_shapes(image_shape, max_batch_size, opt_batch_size)
        if use_tensorrt and model_format == "legacy":
            if not ir_optim:  # the IR passes are what hand subgraphs to TensorRT
                raise ValueError("use_tensorrt on a .pdmodel model needs ir_optim=True (Global.ir_optim)")
            calls.append(("enable_tensorrt_engine", (), dict(
                workspace_size=1 << 30, max_batch_size=max_batch_size, min_subgraph_size=min_subgraph_size,
                precision_mode=getattr(pi.PrecisionType, PRECISIONS[precision]),
                use_static=True, use_calib_mode=False)))  # int8: quantised models only (chips.tensorrt_problem)
            calls.append(("set_trt_dynamic_shape_info", ({"x": lo}, {"x": hi}, {"x": opt}), {}))  # min, max, opt
            if trt_cache_dir:
                calls.append(("set_optim_cache_dir", (trt_cache_dir,), {}))
    elif device == "xpu":
        calls += [("enable_xpu", (), {}), ("set_xpu_device_id", (device_id,), {})]
    elif device == "npu":
        calls.append(("enable_custom_device", ("npu", device_id), {}))
    else:
        calls += [("disable_gpu", (), {}), ("set_cpu_math_library_num_threads", (cpu_threads,), {})]
        if enable_mkldnn:
            calls += [("enable_mkldnn", (), {}), ("set_mkldnn_cache_capacity", (mkldnn_cache_capacity,), {})]
        else:
            calls.append(("disable_mkldnn", (), {}))  # Paddle 3 turns oneDNN on by default
    calls.append(("switch_ir_optim", (ir_optim,), {}))
    if memory_optim and (model_format == "legacy" or device != "cpu"):
        calls.append(("enable_memory_optim", (), {}))
    calls.append(("disable_glog_info", (), {}))
    return calls


def build_config(model_dir, calls):
    """A ``paddle.inference.Config`` for ``model_dir`` with ``calls`` applied."""
    import paddle.inference as pi
    config = pi.Config(model_dir, "inference")
    for name, args, kwargs in calls:
        getattr(config, name)(*args, **kwargs)
    return config


class _Predictor:
    """Shared input check and L2 normalisation; subclasses implement ``_run``."""

    def __call__(self, images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or list(images.shape[1:]) != list(self.info["image_shape"]):
            raise ValueError(f"input shape {list(images.shape)}: expected [N, "
                             f"{', '.join(map(str, self.info['image_shape']))}]")
        feats = self._run(images)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


class FeaturePredictor(_Predictor):
    """images [N, 3, H, W] float32 (preprocessed) -> L2-normalised features [N, D], Paddle Inference.

    Keyword options are those of ``config_calls``. With ``use_tensorrt`` it refuses
    (trt.TensorRTUnavailable) where TensorRT cannot run, and ``trt_cache`` is the folder of the
    engines it built or reused (``trt_cache_dir``, default ``<model_dir>/_trt_cache``)."""

    def __init__(self, model_dir, **options):
        import paddle.inference as pi
        self.format = model_format(model_dir)
        self.info = load_model_info(model_dir)
        shape = self.info["image_shape"]
        self.calls = config_calls(shape, self.format, **options)  # checks the options first
        self.trt_cache = None
        if options.get("use_tensorrt"):
            a = inspect.signature(config_calls).bind(shape, self.format, **options)
            a.apply_defaults()
            a = a.arguments
            self.trt_cache, model_dir = prepare(model_dir, self.format, shape, a["precision"], a["max_batch_size"],
                                                a["opt_batch_size"], a["min_subgraph_size"], a["device_id"],
                                                a["trt_cache_dir"])
            self.calls = config_calls(shape, self.format, **{**options, "trt_cache_dir": self.trt_cache})
        self.predictor = pi.create_predictor(build_config(model_dir, self.calls))
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def clone(self):
        """A predictor for another thread: shares the weights, owns its buffers (Paddle Inference
        predictors are not thread-safe; clones are)."""
        other = copy.copy(self)
        other.predictor = self.predictor.clone()
        other.input = other.predictor.get_input_handle(other.predictor.get_input_names()[0])
        other.output = other.predictor.get_output_handle(other.predictor.get_output_names()[0])
        return other

    def _run(self, images):
        self.input.reshape(images.shape)
        self.input.copy_from_cpu(images)
        self.predictor.run()
        return self.output.copy_to_cpu()


class OnnxPredictor(_Predictor):
    """The same model converted to ``inference.onnx`` (deploy/python/onnx_export.py), ONNX Runtime.
    backends.build_predictor builds it after converting the model when its ONNX file is missing or
    stale (onnx_export.onnx_model)."""

    def __init__(self, model_dir, device="cpu", cpu_threads=2, device_id=0, onnx_file=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("onnxruntime is not installed (pip install onnxruntime)") from None
        self.info = load_model_info(model_dir)
        path = onnx_file or os.path.join(model_dir, "inference.onnx")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: convert the model first with "
                                    f"python deploy/python/onnx_export.py --model_dir {model_dir}")
        if device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("device=gpu: this onnxruntime has no CUDAExecutionProvider "
                                 "(pip install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": device_id})]
        elif device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device={device!r}: ONNX Runtime here runs on 'cpu' or 'gpu'")
        self.session = ort.InferenceSession(path, session_options(ort, cpu_threads), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def clone(self):
        return self  # an ONNX Runtime session may be run from several threads at once

    def _run(self, images):
        return self.session.run(None, {self.input_name: images})[0]


def session_options(ort, cpu_threads):
    """ONNX Runtime's settings, stated rather than left to its defaults (which vary by version)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads  # math threads of one run, as cpu_num_threads gives Paddle
    opts.inter_op_num_threads = 1  # a ViT is one chain of ops: no parallel branches to feed a second pool
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # layout and fusions
    opts.log_severity_level = 3  # paddle2onnx leaves unused initialisers; ORT warns per tensor
    return opts
