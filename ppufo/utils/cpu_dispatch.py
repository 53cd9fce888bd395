"""MKL's fast kernels on AMD CPUs.

Paddle's CPU matmul is the MKL build Paddle ships (MKLML), which picks its AVX2/AVX-512 kernels by
CPU vendor: on an AMD CPU it runs a generic path at about half the speed (2048² fp32 matmul on
this 2-core AMD EPYC: 74 GFLOP/s; with the AVX2 kernels 149). That MKL still honours
``MKL_DEBUG_CPU_TYPE=5`` (use the AVX2 kernels), which it reads once when it loads, so this runs
when ppufo is imported, before paddle. A value the user set is left alone (an empty one keeps
MKL's own choice).
"""
import os
import sys

VAR = "MKL_DEBUG_CPU_TYPE"


def cpu_info(path="/proc/cpuinfo"):
    """(vendor id, set of flags) of the first CPU; ("", set()) where there is no /proc/cpuinfo."""
    vendor, flags = "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if vendor and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def prefer_mkl_avx2(environ=os.environ, info=None):
    """Set MKL_DEBUG_CPU_TYPE=5 on an AMD CPU with AVX2. Returns what was decided: "set",
    "user" (already in the environment), "too late" (paddle, hence MKL, already imported) or
    "not needed"."""
    if VAR in environ:
        return "user"
    vendor, flags = info or cpu_info()
    if vendor != "AuthenticAMD" or "avx2" not in flags:
        return "not needed"
    if "paddle" in sys.modules:
        return "too late"
    environ[VAR] = "5"
    return "set"


STATE = prefer_mkl_avx2()
