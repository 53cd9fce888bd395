"""Convert an exported model to ONNX with paddle2onnx (ppufo-onnx; deploy/python/onnx_export.py)."""
import argparse
import sys

from ..inference.onnx_export import export_onnx, max_feature_diff
from ..utils.config import arg_range


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True, help="folder written by tools/export_model.py")
    p.add_argument("--save_file", help="default <model_dir>/inference.onnx")
    p.add_argument("--opset_version", type=arg_range(int, min=7), default=11,
                   help="ONNX opset (7 or later; default 11)")
    p.add_argument("--check", action="store_true", help="compare with Paddle Inference (tolerance 1e-4)")
    a = p.parse_args(argv)
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
