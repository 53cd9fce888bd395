"""Pick the device named in Global.device; fail clearly when this Paddle build lacks it."""
import paddle

from .errors import ConfigError


def set_device(name):
    kind = name.split(":")[0]
    compiled = {
        "cpu": True,
        "gpu": paddle.device.is_compiled_with_cuda(),
        "xpu": paddle.device.is_compiled_with_xpu(),
    }
    if kind in compiled and not compiled[kind]:
        raise ConfigError(f"Global.device={name}: this paddle build has no {kind.upper()} support "
                          f"(install paddlepaddle-gpu / the {kind} build, or use Global.device=cpu)")
    if kind not in compiled and kind not in paddle.device.get_all_custom_device_type():
        raise ConfigError(f"Global.device={name}: unknown device; use cpu, gpu[:N], xpu[:N] or an "
                          f"installed custom device ({paddle.device.get_all_custom_device_type()})")
    return paddle.set_device(name)
