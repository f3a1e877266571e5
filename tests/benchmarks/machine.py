"""The machine a benchmark ran on: CPU model and the ISA flags that decide INT8 speed (printed by every benchmark,
since the CPU differs between machines and only ratios measured in one run compare)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA = {"avx2": "AVX2", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}


def describe() -> str:
    """'Intel(R) Xeon(R) ..., 2 cores; AVX2 yes, AVX-512 VNNI yes, AVX-VNNI yes, AMX-INT8 yes'."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    marks = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for flag, name in ISA.items())
    return f"{model}, {os.cpu_count()} cores; {marks}"
