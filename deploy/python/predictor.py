"""Paddle Inference feature predictor for models written by tools/export_model.py.

Notes for Paddle 3: ``paddle.jit.save`` writes ``inference.json`` (PIR) + ``inference.pdiparams``;
older exports have ``inference.pdmodel``. ``Config(model_dir, "inference")`` finds either.
``enable_memory_optim()`` breaks PIR models on CPU (memory_optimize_pass error), so it is only
used for legacy models or on GPU, and only when asked.
"""
import os

import numpy as np
import yaml

DEVICES = ("cpu", "gpu", "xpu", "npu")
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


class FeaturePredictor:
    """images [N, 3, H, W] float32 (preprocessed) -> L2-normalised features [N, D]."""

    def __init__(self, model_dir, device="cpu", enable_mkldnn=True, cpu_threads=2,
                 use_tensorrt=False, precision="fp32", max_batch_size=8, ir_optim=True,
                 memory_optim=False, gpu_mem_mb=500, device_id=0):
        import paddle.inference as pi
        if device not in DEVICES:
            raise ValueError(f"device={device!r}: expected one of {DEVICES}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: expected one of {sorted(PRECISIONS)}")
        self.format = model_format(model_dir)
        self.info = load_model_info(model_dir)
        config = pi.Config(model_dir, "inference")
        if device == "gpu":
            config.enable_use_gpu(gpu_mem_mb, device_id)
            if use_tensorrt:
                c, h, w = self.info["image_shape"]
                config.enable_tensorrt_engine(
                    workspace_size=1 << 30, max_batch_size=max_batch_size, min_subgraph_size=3,
                    precision_mode=getattr(pi.PrecisionType, PRECISIONS[precision]),
                    use_static=False, use_calib_mode=precision == "int8")
                shape = [1, c, h, w]
                config.set_trt_dynamic_shape_info({"x": shape}, {"x": [max_batch_size, c, h, w]},
                                                  {"x": [max_batch_size, c, h, w]})
        elif device == "xpu":
            config.enable_xpu()
            config.set_xpu_device_id(device_id)
        elif device == "npu":
            config.enable_custom_device("npu", device_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads)
            if enable_mkldnn:
                config.enable_mkldnn()
                config.set_mkldnn_cache_capacity(10)
            else:
                config.disable_mkldnn()
        config.switch_ir_optim(ir_optim)
        if memory_optim and (self.format == "legacy" or device != "cpu"):
            config.enable_memory_optim()
        config.disable_glog_info()
        self.predictor = pi.create_predictor(config)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, images):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or list(images.shape[1:]) != list(self.info["image_shape"]):
            raise ValueError(f"input shape {list(images.shape)}: expected [N, "
                             f"{', '.join(map(str, self.info['image_shape']))}]")
        self.input.reshape(images.shape)
        self.input.copy_from_cpu(images)
        self.predictor.run()
        feats = self.output.copy_to_cpu()
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
