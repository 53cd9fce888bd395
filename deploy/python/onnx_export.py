"""Convert an exported model (inference.json or .pdmodel + .pdiparams) to ONNX with paddle2onnx.

python deploy/python/onnx_export.py --model_dir inference/quickstart/person [--check]
-> inference/quickstart/person/inference.onnx (input x [N, 3, H, W], dynamic N), run by
   OnnxPredictor / deploy/configs/onnx.yaml. --check compares ONNX Runtime with Paddle Inference.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from predictor import FeaturePredictor, OnnxPredictor, load_model_info, model_format  # noqa: E402


def export_onnx(model_dir, save_file=None, opset_version=11):
    """Write ``save_file`` (default <model_dir>/inference.onnx); returns its path."""
    try:
        import paddle2onnx
    except ImportError:
        raise ImportError("paddle2onnx is not installed (pip install paddle2onnx)") from None
    fmt = model_format(model_dir)
    model_file = os.path.join(model_dir, "inference.json" if fmt == "pir" else "inference.pdmodel")
    save_file = save_file or os.path.join(model_dir, "inference.onnx")
    if os.path.exists(save_file):
        os.remove(save_file)  # a failed conversion must not leave an old model looking fresh
    try:
        # optimize_tool "None": the default "polygraphy" sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and
        # pip-installs onnx_graphsurgeon at run time, which upgrades numpy to 2.x (measured with
        # paddle2onnx 2.1.0); "onnxoptimizer" fails on a misspelt pass name there and falls back.
        paddle2onnx.export(model_file, os.path.join(model_dir, "inference.pdiparams"), save_file,
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="folder written by tools/export_model.py")
    p.add_argument("--save_file", help="default <model_dir>/inference.onnx")
    p.add_argument("--opset_version", type=int, default=11)
    p.add_argument("--check", action="store_true", help="compare with Paddle Inference (tolerance 1e-4)")
    a = p.parse_args()
    try:
        path = export_onnx(a.model_dir, a.save_file, a.opset_version)
        print(f"wrote {path}")
        if a.check:
            diff = max_feature_diff(a.model_dir, path)
            print(f"max |ONNX Runtime - Paddle Inference| = {diff:.2e}")
            if diff > 1e-4:
                sys.exit(f"error: features differ by {diff:.2e} > 1e-4")
    except (FileNotFoundError, ImportError, RuntimeError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
