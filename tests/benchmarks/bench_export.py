"""Benchmark (not a test): our torch-free export vs torch.onnx.export through transformers.

Both run as whole processes, from a BERT-base-sized checkpoint on disk to an ONNX file on disk, in the
same run: wall time (goal: ours <= 1/2 of torch's) and peak RSS (goal: <= 1.5x the safetensors size).
Needs the test extra (torch==2.13.0, transformers). Usage:

    python tests/benchmarks/bench_export.py [--runs 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

TORCH_EXPORT = """
import sys, torch, transformers
folder, out = sys.argv[1], sys.argv[2]
model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()

class Wrapper(torch.nn.Module):  # transformers 5 models reject positional args in tracing
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

ids = torch.ones(1, 16, dtype=torch.long)
axes = {n: {0: "batch_size", 1: "sequence_length"} for n in ("input_ids", "attention_mask", "token_type_ids")}
torch.onnx.export(Wrapper(model), (ids, ids, torch.zeros_like(ids)), out, dynamo=False, opset_version=17,
                  input_names=list(axes), output_names=["logits"], dynamic_axes=axes)
"""

import machine  # noqa: E402  (tests/benchmarks/machine.py: CPU model and ISA flags)
from bench_int8 import make_checkpoint, run_child  # noqa: E402  (checkpoint; wall time, peak RSS of a child)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-export-"))).resolve()
    folder = work / "bert-base"
    make_checkpoint(folder)
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6
    ours_cmd = [sys.executable, "-m", "app", "export", str(folder), "--out", str(work / "ours"), "-q"]
    torch_cmd = [sys.executable, "-c", TORCH_EXPORT, str(folder), str(work / "torch.onnx")]
    results = {"ours": [], "torch": []}
    for _ in range(args.runs):  # interleaved, so both see the same machine state
        results["ours"].append(run_child(ours_cmd)[:2])
        results["torch"].append(run_child(torch_cmd)[:2])
    print(f"BERT-base-sized checkpoint: {size_mb:.0f} MB safetensors; {args.runs} runs each, interleaved")
    print(f"{'':>24} {'wall s (median)':>16} {'peak RSS MB (max)':>18}")
    summary = {}
    for name, label in (("ours", "pocket-nlp export"), ("torch", "torch.onnx.export")):
        wall = statistics.median(r[0] for r in results[name])
        rss = max(r[1] for r in results[name])
        summary[name] = (wall, rss)
        print(f"{label:>24} {wall:>16.2f} {rss:>18.0f}")
    ratio = summary["ours"][0] / summary["torch"][0]
    print(f"wall time ours/torch: {ratio:.2f} (goal <= 0.50)")
    print(f"peak RSS ours / safetensors size: {summary['ours'][1] / size_mb:.2f} (goal <= 1.50)")
    print(f"peak RSS torch / safetensors size: {summary['torch'][1] / size_mb:.2f}")


if __name__ == "__main__":
    main()
