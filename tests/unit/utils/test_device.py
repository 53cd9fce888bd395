"""Global.cpu_threads reaches Paddle's CPU kernels (its OpenMP runtime), defaults to the usable
cores shared among a machine's launched processes, and can be overridden."""
import os

import paddle
import pytest

from ppufo.utils import device
from ppufo.utils.errors import ConfigError


def paddle_openmp_threads():
    """Threads of the OpenMP runtime Paddle ships (libiomp5), as the runtime itself reports."""
    from threadpoolctl import threadpool_info
    paddle.matmul(paddle.ones([8, 8]), paddle.ones([8, 8]))  # make sure the runtime is loaded
    found = [i["num_threads"] for i in threadpool_info()
             if i["internal_api"] == "openmp" and os.sep + "paddle" + os.sep in i["filepath"]]
    assert found, "Paddle's OpenMP runtime not found among the loaded thread pools"
    return found[0]


def test_set_cpu_threads_reaches_paddles_openmp_runtime_and_the_flag():
    before = device.cpu_threads()
    try:
        for n in (1, 2, 3):
            device.set_cpu_threads(n)
            assert paddle_openmp_threads() == n and device.cpu_threads() == n
    finally:
        device.set_cpu_threads(before)


def test_default_is_every_usable_core_shared_among_the_machines_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    assert device.resolve_cpu_threads(0) == 8
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")  # two ranks of a launch on this machine
    assert device.resolve_cpu_threads(0) == 4
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "16")
    assert device.resolve_cpu_threads(0) == 1
    assert device.resolve_cpu_threads(3) == 3  # an explicit count is taken as given
    with pytest.raises(ConfigError, match="Global.cpu_threads: -1"):
        device.resolve_cpu_threads(-1)


def test_setup_device_applies_the_config_and_an_override(make_config):
    before = device.cpu_threads()
    try:
        device.setup_device(make_config("Global.cpu_threads=1"))
        assert paddle_openmp_threads() == 1
        device.setup_device(make_config())  # default 0: every usable core
        assert paddle_openmp_threads() == device.usable_cores() == device.cpu_threads()
    finally:
        device.set_cpu_threads(before)


def test_loader_workers_run_one_paddle_thread():
    from ppufo.data.loader import one_thread_worker
    before = device.cpu_threads()
    try:
        device.set_cpu_threads(2)
        one_thread_worker(0)
        assert paddle_openmp_threads() == 1
    finally:
        device.set_cpu_threads(before)


def test_mkl_avx2_kernels_are_asked_for_on_amd_cpus_with_avx2_only(monkeypatch):
    import sys
    from ppufo.utils.cpu_dispatch import prefer_mkl_avx2
    amd, intel = ("AuthenticAMD", {"sse2", "avx2", "fma"}), ("GenuineIntel", {"avx2", "avx512f"})
    env = {}
    assert prefer_mkl_avx2(env, amd) == "too late" and env == {}  # MKL is loaded with paddle
    monkeypatch.delitem(sys.modules, "paddle")
    assert prefer_mkl_avx2(env, amd) == "set" and env == {"MKL_DEBUG_CPU_TYPE": "5"}
    assert prefer_mkl_avx2({}, ("AuthenticAMD", {"sse2"})) == "not needed"  # no AVX2 to ask for
    assert prefer_mkl_avx2({}, intel) == "not needed"
    env = {"MKL_DEBUG_CPU_TYPE": ""}  # the user's choice, even empty, is kept
    assert prefer_mkl_avx2(env, amd) == "user" and env == {"MKL_DEBUG_CPU_TYPE": ""}


def test_importing_ppufo_before_paddle_sets_the_mkl_kernel_choice_on_this_machine(tmp_path):
    import subprocess
    import sys
    from ppufo.utils.cpu_dispatch import cpu_info
    vendor, flags = cpu_info()
    code = "import os, ppufo, paddle; print(ppufo.utils.cpu_dispatch.STATE, os.environ.get('MKL_DEBUG_CPU_TYPE'))"
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    want = "set 5" if vendor == "AuthenticAMD" and "avx2" in flags else "not needed None"
    assert out.stdout.strip().splitlines()[-1] == want, out.stderr[-1000:]
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\n\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n")
    assert cpu_info(str(fake)) == ("AuthenticAMD", {"fpu", "sse2", "avx2", "fma"})
