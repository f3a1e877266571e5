"""The machine line every benchmark prints first: CPU model, cores and the ISA flags INT8 speed depends on."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the app, for its CPU reading
from app.core.cpu import cpu, int8_path  # noqa: E402

ISA = {"avx2": "AVX2", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8",
       "amx_bf16": "AMX-BF16"}


def flags() -> frozenset[str]:
    """The CPU's ISA flags as Linux names them (empty where they cannot be read)."""
    return cpu()[1] or frozenset()


def describe() -> str:
    """'Intel(R) Xeon(R) ..., 2 cores; AVX2 yes, AVX-512 VNNI yes, ...; ONNX Runtime's INT8 path: AMX'."""
    model, found = cpu()
    if found is None:
        return f"{model}, {os.cpu_count()} cores; ISA flags unknown; ONNX Runtime's INT8 path: {int8_path()}"
    marks = ", ".join(f"{name} {'yes' if flag in found else 'no'}" for flag, name in ISA.items())
    return f"{model}, {os.cpu_count()} cores; {marks}; ONNX Runtime's INT8 path: {int8_path()}"
