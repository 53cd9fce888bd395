"""Convert an exported model to ONNX (same as `ppufo-onnx`):
python deploy/python/onnx_export.py --model_dir inference/quickstart/person [--check]"""
from ppufo.cli.onnx_export import main

if __name__ == "__main__":
    main()
