"""Convert an exported model (inference.json or .pdmodel + .pdiparams) to ONNX with paddle2onnx.

ppufo-onnx --model_dir inference/quickstart/person [--check]   (ppufo/cli/onnx_export.py)
-> inference/quickstart/person/inference.onnx (input x [N, 3, H, W], dynamic N), run by
   OnnxPredictor / deploy/configs/onnx.yaml. --check compares ONNX Runtime with Paddle Inference.
The ONNX Runtime backend also converts on first use (``onnx_model``), so the command is optional.
"""
import os
import time

import numpy as np

from ..utils.dist import exclusive
from ..utils.logger import get_logger
from .predictor import FeaturePredictor, OnnxPredictor, load_model_info, model_format
from .trt import model_files

ONNX_FILE = "inference.onnx"


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


def onnx_state(model_dir):
    """None when <model_dir>/inference.onnx is there and at least as new as the Paddle model,
    else why not ('is missing', 'is older than inference.pdiparams (the model was exported again)')."""
    path = os.path.join(model_dir, ONNX_FILE)
    if not os.path.isfile(path):
        return "is missing"
    newest = max(model_files(model_dir, model_format(model_dir)), key=os.path.getmtime)
    if os.path.getmtime(path) < os.path.getmtime(newest):
        return f"is older than {os.path.basename(newest)} (the model was exported again)"
    return None


def onnx_model(model_dir, convert=True):
    """<model_dir>/inference.onnx, first converted from the exported Paddle model when it is missing or
    stale (an export into the same folder leaves the old ONNX file behind) and ``convert``.

    The conversion is logged, written to a temporary name and renamed, under a lock beside it: a
    process loading the folder meanwhile waits, then finds the whole file. Errors say how to convert
    by hand."""
    path, how = os.path.join(model_dir, ONNX_FILE), f"python deploy/python/onnx_export.py --model_dir {model_dir}"
    state = onnx_state(model_dir)  # also checks the Paddle model is there (model_format)
    if state is None:
        return path
    if not convert:
        raise FileNotFoundError(f"{path} {state}: convert the model first with {how}")
    log = get_logger()
    with exclusive(path + ".lock", f"converting {model_dir} to ONNX", log):
        state = onnx_state(model_dir)
        if state is None:  # another process converted it while this one waited
            return path
        log.info(f"{path} {state}: converting the exported model with paddle2onnx (once; the result is kept "
                 f"beside the model)")
        tmp, t = f"{path}.{os.getpid()}.tmp", time.time()
        try:
            export_onnx(model_dir, tmp)
            os.replace(tmp, path)
        except (ImportError, RuntimeError, OSError) as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise RuntimeError(f"{path} {state}, and converting it failed: {e}. Convert it by hand with {how} "
                               f"(pip install paddle2onnx; the folder must be writable)") from None
        log.info(f"wrote {path} in {time.time() - t:.1f}s")
    return path
