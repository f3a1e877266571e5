"""What this CPU offers ONNX Runtime's INT8 kernels, which decides both their speed and their exactness.

On x86 CPUs without VNNI (AVX2 or AVX-512 alone), MLAS multiplies u8 activations by s8 weights with
`vpmaddubsw`, which adds two products in int16 and saturates: 8-bit weights lose answers there, 7-bit weights
(|w| <= 63) cannot saturate. VNNI (AVX-512 VNNI, AVX-VNNI) and AMX accumulate in int32, and ARM's dot-product
instructions have no such limit.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

# /proc/cpuinfo flag → the name people know it by, fastest INT8 path first.
INT8_PATHS = (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"))


@functools.cache
def cpu() -> tuple[str, frozenset[str] | None]:
    """(CPU model, its ISA flags in /proc/cpuinfo spelling; None where they cannot be read)."""
    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        flags: set[str] | None = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags" and flags is None:
                flags = set(value.split())
        return model, frozenset(flags) if flags is not None else None
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "x86_64":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features",
                                  "machdep.cpu.leaf7_features"], capture_output=True, text=True, timeout=5).stdout
            lines = out.splitlines()
            words = {w.lower().replace(".", "_") for w in " ".join(lines[1:]).split()}
            flags = {"avx2"} & words | ({"avx512_vnni"} if "avx512vnni" in words else set())
            return (lines[0].strip() if lines else model), frozenset(flags)
        except (OSError, subprocess.SubprocessError):
            pass
    return model, None


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


_THIS_CPU = object()  # int8_path's default: read this machine's flags


def _path(flags=_THIS_CPU) -> tuple[str, bool]:
    """(the INT8 path in words, whether u8×s8 products saturate there) for this CPU or x86 `flags`."""
    if flags is _THIS_CPU:
        if not is_x86():
            return f"{platform.machine() or 'unknown'} (no u8×s8 saturation)", False
        flags = cpu()[1]
    if flags is None:  # unreadable: the safe side
        return "unknown (CPU flags not readable)", True
    for flag, name in INT8_PATHS:
        if flag in flags:
            return name, False
    return ("AVX2" if "avx2" in flags else "SSE") + ", no VNNI (u8×s8 can saturate)", True


def int8_path(flags=_THIS_CPU) -> str:
    """The INT8 GEMM path ONNX Runtime's MLAS takes here, in words ('AVX-512 VNNI', 'AVX2, no VNNI ...').

    `flags` (a set in /proc/cpuinfo spelling, or None for unreadable) describes another x86 CPU."""
    return _path(flags)[0]


def u8s8_saturates() -> bool:
    """True where 8-bit weights can saturate in int16: x86 without VNNI or AMX, and x86 we cannot read (safe side)."""
    return _path()[1]
