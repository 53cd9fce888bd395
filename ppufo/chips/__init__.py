"""Deploy targets ("chips"): the one list of them, the Paddle Inference options that run a model
on each, and their per-layer latency tables (package data: ppufo/chips/tables/<chip>.json,
see ppufo/nas/latency_table.py). Plain data: importing this module imports no paddle."""
import os
import platform

DEVICES = ("cpu", "gpu", "xpu", "npu")  # Paddle Inference devices

# chip -> FeaturePredictor options; None where a latency can come only from a table
# (gpu_trt_int8 needs calibration data, onnx another runtime)
CHIPS = {
    "cpu_x86": {"device": "cpu", "enable_mkldnn": True},
    "gpu": {"device": "gpu"},
    "gpu_trt_fp16": {"device": "gpu", "use_tensorrt": True, "precision": "fp16"},
    "gpu_trt_int8": None,
    "xpu": {"device": "xpu"},
    "npu": {"device": "npu"},
    "arm": {"device": "cpu", "enable_mkldnn": False},
    "onnx": None,
}
CHIP_NAMES = tuple(CHIPS)
TABLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")


def table_path(chip, path=None):
    """The latency table of ``chip`` (``path`` if given, else the one shipped with ppufo)."""
    return path or os.path.join(TABLES, f"{chip}.json")


def measurable(chip):
    return CHIPS.get(chip) is not None


def chip_present(chip):
    """Whether ``chip`` can be timed on this machine with this Paddle build."""
    if chip == "cpu_x86":
        return platform.machine().lower() in ("x86_64", "amd64", "i686")
    if chip == "arm":
        return platform.machine().lower() in ("aarch64", "arm64")
    if not measurable(chip):
        return False
    import paddle
    if chip in ("gpu", "gpu_trt_fp16"):
        return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if chip == "xpu":
        return paddle.device.is_compiled_with_xpu()
    return "npu" in paddle.device.get_all_custom_device_type()
