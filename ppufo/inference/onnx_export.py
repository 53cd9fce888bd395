"""Convert an exported model (inference.json or .pdmodel + .pdiparams) to ONNX with paddle2onnx.

ppufo-onnx --model_dir inference/quickstart/person [--check]   (ppufo/cli/onnx_export.py)
-> inference/quickstart/person/inference.onnx (input x [N, 3, H, W], dynamic N), run by
   OnnxPredictor / deploy/configs/onnx.yaml. --check compares ONNX Runtime with Paddle Inference.
"""
import os

import numpy as np

from .predictor import FeaturePredictor, OnnxPredictor, load_model_info, model_format
from .trt import model_files


def export_onnx(model_dir, save_file=None, opset_version=11):
    """Write ``save_file`` (default <model_dir>/inference.onnx); returns its path."""
    try:
        import paddle2onnx
    except ImportError:
        raise ImportError("paddle2onnx is not installed (pip install paddle2onnx)") from None
    model_file, params_file = model_files(model_dir, model_format(model_dir))
    save_file = save_file or os.path.join(model_dir, "inference.onnx")
    if os.path.exists(save_file):
        os.remove(save_file)  # a failed conversion must not leave an old model looking fresh
    try:
        # optimize_tool "None": the default "polygraphy" sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and
        # pip-installs onnx_graphsurgeon at run time, which upgrades numpy to 2.x (measured with
        # paddle2onnx 2.1.0); "onnxoptimizer" fails on a misspelt pass name there and falls back.
        paddle2onnx.export(model_file, params_file, save_file,
                           opset_version=opset_version, enable_onnx_checker=True, optimize_tool="None")
    except Exception as e:  # paddle2onnx logs the cause, then fails on its own unset result
        raise RuntimeError(f"paddle2onnx {paddle2onnx.__version__} could not convert {model_file} "
                           f"(see the error logged above): {e}") from None
    if not os.path.isfile(save_file):
        raise RuntimeError(f"paddle2onnx {paddle2onnx.__version__} wrote no {save_file}")
    return save_file


def max_feature_diff(model_dir, onnx_file=None, batch=2, seed=0):
    """max |ONNX Runtime - Paddle Inference| over the features of a random batch."""
    c, h, w = load_model_info(model_dir)["image_shape"]
    x = np.random.default_rng(seed).standard_normal((batch, c, h, w)).astype("float32")
    ref = FeaturePredictor(model_dir, enable_mkldnn=False, cpu_threads=1)(x)
    return float(np.abs(OnnxPredictor(model_dir, onnx_file=onnx_file)(x) - ref).max())
