"""Pick the device named in Global.device, and how many CPU threads Paddle's own ops use."""
import os

import paddle

from . import cpu_dispatch
from .errors import ConfigError
from .logger import get_logger


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


def usable_cores():
    """Cores this process may run on (its affinity mask, which taskset/cgroups narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def local_processes():
    """Processes paddle.distributed.launch started on this machine (1 without a launch)."""
    return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", "1")))


def resolve_cpu_threads(requested):
    """Global.cpu_threads -> a thread count: N as given; 0 = the usable cores shared evenly among
    the machine's launched processes (two ranks on 2 cores get one each, not two each)."""
    if requested < 0:
        raise ConfigError(f"Global.cpu_threads: {requested}; expected 0 (every usable core) or a "
                          f"positive thread count")
    return requested or max(1, usable_cores() // local_processes())


def set_cpu_threads(n):
    """Threads of Paddle's CPU kernels in this process (Paddle's default is 1). The flag is set
    too, so get_flags reads the value back."""
    paddle.base.core.set_num_threads(int(n))
    paddle.set_flags({"FLAGS_paddle_num_threads": int(n)})
    return int(n)


def cpu_threads():
    return int(paddle.get_flags(["FLAGS_paddle_num_threads"])["FLAGS_paddle_num_threads"])


def setup_device(config, device=None):
    """Global.device (or ``device``) and Global.cpu_threads for a tool that runs Paddle (train,
    eval, export, extraction, search); logs what was chosen."""
    g = config["Global"]
    device = device or g["device"]
    place = set_device(device)
    n = set_cpu_threads(resolve_cpu_threads(g["cpu_threads"]))
    log = get_logger()
    log.info(f"device {device}; Paddle CPU threads {n} (Global.cpu_threads={g['cpu_threads']}; "
             f"{usable_cores()} usable cores, {local_processes()} process(es) on this machine); "
             f"MKL AVX2 kernels on AMD: {cpu_dispatch.STATE}")
    if cpu_dispatch.STATE == "too late":
        log.warning("paddle was imported before ppufo, so MKL runs its slow generic path on this AMD "
                    "CPU; import ppufo first or export MKL_DEBUG_CPU_TYPE=5")
    return place
