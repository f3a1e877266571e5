"""Benchmark (not a test): peak resident memory of a whole `python -m app convert`, against the FP32 model's size.

Two checkpoints with random weights, built here with tests/tinymodels.py: BERT-base (438 MB of FP32 weights)
and XLM-R-large's shape (24 layers x 1024, 250k vocabulary: 2.2 GB, past protobuf's 2 GB limit, so its
ONNX files carry external data). Each is converted by `python -m app convert FOLDER --no-reuse` in a fresh
process; wait4's ru_maxrss gives its peak RSS and the goal is <= 2x the FP32 model (model.onnx + its data).
The guard's ladder runs on BERT-base as users run it; XLM-R-large is converted with --force-int8 (one
candidate: the ladder's rungs are streamed one after another, so more rungs take longer but no more memory,
and random weights would send a 24-layer model down the slow keep-FP32 rungs). Usage:

    .venv/bin/python tests/benchmarks/bench_convert_memory.py [--only bert-base,xlmr-large] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import machine  # noqa: E402  (tests/benchmarks/machine.py: CPU model and ISA flags)
from bench_int8 import BERT_BASE, make_checkpoint, run_child  # noqa: E402  (checkpoints, child processes)

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {
    "bert-base": (BERT_BASE, []),
    "xlmr-large": ('"xlm-roberta", "sequence-classification", hidden=1024, layers=24, heads=16, intermediate=4096, '
                   'max_positions=514, vocab_size=250002', ["--force-int8"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SHAPES), help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the checkpoints between runs")
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}", flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-convert-memory-"))
    print(f"{'model':<12} {'FP32 MB':>8} {'INT8 MB':>8} {'convert s':>10} {'peak RSS MB':>12} {'RSS / FP32':>11}"
          f"  {'goal <= 2.0':<12} INT8 settings")
    for name in args.only.split(","):
        shape, flags = SHAPES[name]
        folder = work / name
        make_checkpoint(folder, shape)
        store = work / f"store-{name}"
        shutil.rmtree(store, ignore_errors=True)
        env = dict(os.environ, POCKET_NLP_HOME=str(store))
        wall, peak_mib, _ = run_child([sys.executable, "-m", "app", "convert", str(folder), "-q", "--no-reuse", *flags],
                                      env=env)
        peak = peak_mib * 2**20
        manifest = json.loads(next(store.rglob("manifest.json")).read_text())
        files = manifest["files"]
        fp32, int8 = files["fp32_bytes"], files.get("int8_bytes") or 0
        chosen = (manifest["quantization"].get("chosen") or {}).get("settings", "kept FP32")
        print(f"{name:<12} {fp32 / 1e6:>8.0f} {int8 / 1e6:>8.0f} {wall:>10.1f} {peak / 1e6:>12.0f} {peak / fp32:>11.2f}"
              f"  {'met' if peak <= 2 * fp32 else 'NOT met':<12} {chosen}", flush=True)
        shutil.rmtree(store, ignore_errors=True)
    print("note: peak RSS is the whole process (Python, onnxruntime and the tokenizer included), as wait4 reports it.")


if __name__ == "__main__":
    main()
