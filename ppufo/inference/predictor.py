"""Paddle Inference feature predictor for models written by tools/export_model.py.

Notes for Paddle 3: ``paddle.jit.save`` writes ``inference.json`` (PIR) + ``inference.pdiparams``;
older exports and int8 models (ppufo-quantize) have ``inference.pdmodel``, which
``Config(model_dir, "inference")`` does not find in Paddle 3.3.1 (it looks for inference.json
only): build_config names the two files. An int8 model (``inference.yml`` ``precision: int8``) runs
on CPU with oneDNN's int8 kernels (``int8_ops``; docs/notes/quantization.md).
``enable_memory_optim()`` breaks PIR models on CPU (memory_optimize_pass error), so it is only
used for legacy models or on GPU, and only when asked. TensorRT: ppufo/inference/trt.py (PIR
models are converted with paddle.tensorrt, legacy ones use enable_tensorrt_engine).
``OnnxPredictor`` runs the same model converted to ONNX with ONNX Runtime; backends.py picks one.

CPU speed (docs/notes/inference_speed.md, 2026-12-05): Paddle's executor hands every dead
intermediate tensor to a garbage-collector thread, about 100 hand-offs per call of a 6-block ViT,
which on a 2-core machine costs more than the model's math at batch 1. ``gc_mb`` changes that
(``GC_FLAG``, read once when a predictor builds its executor on its first run). A model exported
with packed attention (``inference.yml`` ``attention: packed``) gets one fused ``self_dp_attention``
kernel per block on AVX-512 CPUs (``fuse_attention``). A model with less than ``small_model_mb``
of weights runs with oneDNN off and no freeing (``small_model``): per-op costs dominate there.
"""
import copy
import inspect
import os

import numpy as np
import yaml

from ..chips import DEVICES
from ..data.transforms import build_transforms
from ..utils.errors import ConfigError
from ..utils.paddle_flags import paddle_flags
from .trt import batch_shapes, prepare

PRECISIONS = {"fp32": "Float32", "fp16": "Half", "int8": "Int8"}
# Paddle's threshold of dead tensors its executor frees at once (GB): 0 each one as soon as it dies,
# handed to a GC thread; > 0 in batches of that size; < 0 never (they stay allocated for the next run)
GC_FLAG = "FLAGS_eager_delete_tensor_gb"
# oneDNN fusion passes that take the packed attention's transposes before self_attention_fuse_pass
# can see the pattern (measured: with both deleted, the pass fuses every block)
ATTENTION_BLOCKERS = ("reshape_transpose_matmul_fuse_pass", "matmul_transpose_reshape_fuse_pass")


def attention_fusable():
    """Whether this CPU can run Paddle's fused ``self_dp_attention`` kernel (AVX-512 only)."""
    from paddle.base import core
    return bool(core.supports_avx512f())


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
                 ir_optim=True, memory_optim=False, gpu_mem_mb=500, device_id=0, fuse_attention=False, gc_mb=64,
                 small_model_mb=64, int8_ops=None):
    """The ``paddle.inference.Config`` calls for these options, as ``[(method, args, kwargs)]``.

    ``gc_mb`` is no Config call: on CPU it is how Paddle frees the dead intermediate tensors of a
    run (GC_FLAG, in MB), which FeaturePredictor sets for its first run (``first_run_flags``):
    0 each at once on Paddle's GC thread (Paddle's default), > 0 in batches of that many MB, -1
    never (they stay allocated and the next run reuses them: fastest, holds every activation of
    the largest batch run); None leaves Paddle's flag as it is. ``small_model_mb`` is no Config call
    either: FeaturePredictor runs a model whose weights (inference.pdiparams) are smaller than that
    on CPU with oneDNN off and ``gc_mb=-1`` whatever the two options say (``small_model``; 0: never).

    ``fuse_attention`` (CPU, for a model exported with packed attention; FeaturePredictor sets it
    from inference.yml): add Paddle's ``self_attention_fuse_pass`` to the plain CPU passes, or, with
    oneDNN, delete the two fusion passes that would take its pattern first (ATTENTION_BLOCKERS).
    Skipped on CPUs without AVX-512, which the fused kernel needs.

    ``int8_ops`` (CPU with oneDNN, for an int8 model; FeaturePredictor sets it from inference.yml):
    ``enable_mkldnn_int8`` with these op types (empty: every op the model has scales for), which
    turns on the legacy passes that put quantised ops on oneDNN's int8 kernels. None: a float model.
    An int8 model runs so whatever ``precision`` says; ``precision="int8"`` on CPU (the cpu_x86_int8
    chip) is a promise that it does: without oneDNN or int8_ops it is refused here, and
    FeaturePredictor refuses a float model for it.

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
    if precision == "int8" and device == "cpu":  # oneDNN's int8 kernels: what the model's int8_ops name
        # without IR passes Paddle ignores enable_mkldnn_int8 ("only works when IR optimization is enabled")
        if not (enable_mkldnn and ir_optim) or int8_ops is None:
            raise ValueError("precision='int8' on cpu runs an int8 model (ppufo-quantize) on oneDNN's int8 kernels: "
                             f"it needs enable_mkldnn=True, ir_optim=True and the model's int8_ops (got enable_mkldnn="
                             f"{enable_mkldnn}, ir_optim={ir_optim}, int8_ops={int8_ops})")
    elif precision != "fp32" and not use_tensorrt:
        raise ValueError(f"precision={precision!r} needs use_tensorrt=True")
    if gc_mb is not None and (isinstance(gc_mb, bool) or not isinstance(gc_mb, (int, float)) or gc_mb < -1):
        raise ValueError(f"gc_mb={gc_mb!r}: expected MB >= 0, -1 (never free) or None")
    if isinstance(small_model_mb, bool) or not isinstance(small_model_mb, (int, float)) or small_model_mb < 0:
        raise ValueError(f"small_model_mb={small_model_mb!r}: expected MB >= 0 (0: no model counts as small)")
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
        if enable_mkldnn and int8_ops is not None:
            calls.append(("enable_mkldnn_int8", (set(int8_ops),), {}))
        if fuse_attention and ir_optim and attention_fusable():
            if enable_mkldnn:  # self_attention_fuse_pass is in the oneDNN list, after these two
                calls += [("delete_pass", (name,), {}) for name in ATTENTION_BLOCKERS]
            else:  # the plain CPU list has only functional passes: add it
                calls.append(("enable_custom_passes", (["self_attention_fuse_pass"],), {}))
    calls.append(("switch_ir_optim", (ir_optim,), {}))
    if memory_optim and (model_format == "legacy" or device != "cpu"):
        calls.append(("enable_memory_optim", (), {}))
    calls.append(("disable_glog_info", (), {}))
    return calls


# Small models (docs/notes/inference_speed.md, 2026-12-05, quickstart ViT-Ti at batch 1 on 2 threads):
# per-op costs outweigh the math, and oneDNN's per-op setup and freeing tensors cost more there than
# oneDNN's faster kernels save; from ViT-B size on, oneDNN is faster and keeping every tensor costs
# 2x memory (ViT-B/16 batch 8: 2.6 vs 1.3 GB)
SMALL_MODEL = {"enable_mkldnn": False, "gc_mb": -1}


def small_model(model_dir, device="cpu", small_model_mb=64):
    """Whether the model in ``model_dir`` runs with SMALL_MODEL's options: on CPU, weights under
    ``small_model_mb`` MB."""
    size = os.path.getsize(os.path.join(model_dir, "inference.pdiparams")) / 2 ** 20
    return device == "cpu" and size < small_model_mb


def first_run_flags(device="cpu", gc_mb=64):
    """The Paddle flags a predictor's first run needs (it builds the executor, which reads them)."""
    if device != "cpu" or gc_mb is None:
        return {}
    return {GC_FLAG: gc_mb / 1024 if gc_mb >= 0 else -1.0}


def build_config(model_dir, calls):
    """A ``paddle.inference.Config`` for ``model_dir`` with ``calls`` applied."""
    import paddle.inference as pi
    if model_format(model_dir) == "legacy":  # Config(dir, prefix) looks for inference.json only
        config = pi.Config(os.path.join(model_dir, "inference.pdmodel"), os.path.join(model_dir, "inference.pdiparams"))
    else:
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

    Keyword options are those of ``config_calls``; ``fuse_attention`` (default True here) is
    switched on only for a model whose inference.yml says ``attention: packed``, ``gc_mb`` is
    applied to the first run (``first_run_flags``), and a small model (``small_model``) runs with
    SMALL_MODEL's options (``self.small``), unless it is an int8 model (``inference.yml`` precision
    int8: ``int8_ops`` from its ``int8_ops``, which need oneDNN). With ``use_tensorrt`` it refuses
    (trt.TensorRTUnavailable) where TensorRT cannot run, and ``trt_cache`` is the folder of the
    engines it built or reused (``trt_cache_dir``, default ``<model_dir>/_trt_cache``)."""

    backend = "paddle"

    def __init__(self, model_dir, **options):
        import paddle.inference as pi
        self.format = model_format(model_dir)
        self.info = load_model_info(model_dir)
        shape = self.info["image_shape"]
        options["fuse_attention"] = options.get("fuse_attention", True) and self.info.get("attention") == "packed"
        self.int8 = self.info.get("precision") == "int8"
        if options.get("precision") == "int8" and options.get("device", "cpu") == "cpu" and not self.int8:
            # else a float model would run, and be timed, as fp32 under an int8 target's name
            raise ConfigError(f"{model_dir}: precision int8 on cpu serves an int8 model written by ppufo-quantize "
                              f"(inference.yml precision: int8), this one is {self.info.get('precision', 'fp32')}: "
                              f"quantise it (tools/quantize.py, docs/deploy.md#int8-on-x86-cpu) or serve it with "
                              f"precision fp32 (deploy/configs/cpu_x86.yaml)")
        if self.int8 and "int8_ops" not in options:  # the model's own list unless the caller names one
            options["int8_ops"] = list(self.info.get("int8_ops") or [])
        config_calls(shape, self.format, **options)  # checks the options before anything reads them
        a = inspect.signature(config_calls).bind(shape, self.format, **options)
        a.apply_defaults()
        a = a.arguments
        self.small = not self.int8 and small_model(model_dir, a["device"], a["small_model_mb"])
        if self.small:
            options.update(SMALL_MODEL)
            a.update(SMALL_MODEL)
        # read when the executor is built, on a predictor's first run (and a clone's): set then
        self.first_run_flags = first_run_flags(a["device"], a["gc_mb"])
        self.built = False
        self.trt_cache = None
        if a["use_tensorrt"]:
            self.trt_cache, model_dir = prepare(model_dir, self.format, shape, a["precision"], a["max_batch_size"],
                                                a["opt_batch_size"], a["min_subgraph_size"], a["device_id"],
                                                a["trt_cache_dir"])
            options["trt_cache_dir"] = self.trt_cache
        self.calls = config_calls(shape, self.format, **options)
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
        other.built = False  # a clone builds its own executor on its first run
        return other

    def _run(self, images):
        # the input and output handles are made once and reused: copy_from_cpu / copy_to_cpu move
        # only the images and the features (a ViT-Ti batch of 1 is 49 KB in, 512 B out)
        self.input.reshape(images.shape)
        self.input.copy_from_cpu(images)
        if self.built or not self.first_run_flags:
            self.predictor.run()
        else:
            with paddle_flags(self.first_run_flags):
                self.predictor.run()
        self.built = True
        return self.output.copy_to_cpu()


class OnnxPredictor(_Predictor):
    """The same model converted to ``inference.onnx`` (deploy/python/onnx_export.py), ONNX Runtime.
    backends.build_predictor builds it after converting the model when its ONNX file is missing or
    stale (onnx_export.onnx_model)."""

    backend = "onnxruntime"

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
