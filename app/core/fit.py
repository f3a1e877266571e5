"""Will it run well here? Download size, memory and latency expected on this computer, before converting.

An estimate from the checkpoint's size alone (FP32 safetensors: 4 bytes a parameter) and one measurement of this
CPU (a float32 matrix product, ~0.15 s, done once): a BERT-style encoder spends about 2 × (non-embedding
parameters) operations per token, ~80% of its parameters are not embeddings, ONNX Runtime's fused FP32 model runs
about 2x numpy's 1024² matrix-product rate (calibrated on the README's MiniLM and BERT-base figures), and INT8
runs about 2.5x faster than FP32 on CPUs with VNNI (~1.8x without). Say "about": Compare measures the real ones.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

TOKENS = 128  # one typical text
NON_EMBEDDING = 0.8
EFFICIENCY = 2.0
INT8_SPEEDUP_VNNI, INT8_SPEEDUP = 2.5, 1.8
RUNS_WELL_MS = 100  # INT8 per 128-token text: interactive


@dataclass(frozen=True)
class Fit:
    download_bytes: int
    fp32_memory_bytes: int
    int8_memory_bytes: int
    fp32_ms: float
    int8_ms: float
    runs_well: bool
    words: str  # one line for the Choose page


@functools.lru_cache(maxsize=1)
def cpu_gflops() -> float:
    """float32 matrix-product speed of this computer, all cores (measured once per run of the app)."""
    import numpy as np

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.15:
        a @ a
        runs += 1
    return 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
        return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags
    except OSError:
        return False


def _memory_bytes() -> int:
    try:
        import psutil
        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001 - an estimate without it
        return 8 << 30


def _mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def estimate(checkpoint_bytes: int, *, gflops: float | None = None) -> Fit:
    """What a checkpoint of this many FP32 bytes needs here (FP16 checkpoints: pass twice their size)."""
    params = checkpoint_bytes / 4
    speed = (gflops or cpu_gflops()) * EFFICIENCY * 1e9  # operations per second
    fp32_ms = 2 * NON_EMBEDDING * params * TOKENS / speed * 1000
    int8_ms = fp32_ms / (INT8_SPEEDUP_VNNI if _has_vnni() else INT8_SPEEDUP)
    fp32_memory, int8_memory = int(checkpoint_bytes * 1.15), int(checkpoint_bytes / 4 * 1.4)
    runs_well = int8_ms <= RUNS_WELL_MS and int8_memory < _memory_bytes() / 4
    words = (f"Download {_mb(checkpoint_bytes)} · memory about {_mb(fp32_memory)} in FP32, {_mb(int8_memory)} in "
             f"INT8 · about {int8_ms:.0f} ms per text in INT8 on this computer ({fp32_ms:.0f} ms in FP32) — "
             + ("runs well here." if runs_well else "will feel slow here; a smaller model answers faster."))
    return Fit(checkpoint_bytes, fp32_memory, int8_memory, round(fp32_ms, 1), round(int8_ms, 1), runs_well, words)
