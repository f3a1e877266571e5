"""DeBERTa-v3-base shape, random weights: what `convert` keeps in FP32, the INT8 file against FP32, and INT8 latency
against our fused FP32 at batch 1 x 128 tokens (one process, the two sessions interleaved, the app's session options).

    flock /tmp/pocket-bench.lock .venv/bin/python tests/benchmarks/bench_deberta.py [--rounds 5 --runs 10]

The checkpoint is DeBERTa-v3-base's layout (12 layers, hidden 768, 12 heads, FFN 3072, 128,100-word vocabulary,
256 position buckets over 512 positions, shared keys, c2p + p2c, normed relative embeddings, no token types) with
the test models' perturbed random weights: random weights are all there is offline, so the guard's figures say how
INT8 treats this graph, not how a fine-tuned DeBERTa's answers move.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

import machine  # noqa: E402  (tests/benchmarks/machine.py)

BASE = dict(hidden=768, layers=12, heads=12, intermediate=3072, max_positions=512, vocab_size=128100,
            position_buckets=256, max_relative_positions=-1)


def sensitivity_report(entry, work: Path) -> None:
    """Which MatMuls the guard would keep in FP32 first, and what the int8 tables (word embeddings, relative
    position tables) cost: logits of INT8 variants against FP32 on the guard's calibration set."""

    from app.core.calibration import build_calibration
    from app.core.quantize import Model, QuantizeConfig, collect, quantize_model, sensitivity
    from app.core.spec import load_spec
    from app.core.tasks.runner import new_session

    spec = load_spec(entry.fp32_dir)
    fp32 = entry.fp32_dir / "model.onnx"
    calibration = build_calibration(entry.fp32_dir, spec)
    collect(fp32, calibration)
    ranked = sensitivity(Model.read(fp32), calibration, QuantizeConfig())
    print("most sensitive MatMuls (relative output error when only it is INT8), the keep-FP32 rung's order:")
    for name, err in ranked[:6]:
        print(f"  {name}: {err:.4f}")
    kinds: dict[str, list[float]] = {}
    for name, err in ranked:
        kinds.setdefault(name.split("/", 3)[-1].rsplit("/", 1)[0], []).append(err)
    print("  by kind (mean over layers): " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in sorted(
        kinds.items(), key=lambda kv: -np.mean(kv[1]))))
    reference = [r["logits"] for r in calibration.reference]
    plain = QuantizeConfig(scale_outliers=False, split_outliers=False)
    for label, config in (("plain INT8 (int8 tables)", plain),
                          ("plain INT8, word + relative tables FP32", replace(plain, quantize_embeddings=False))):
        out = work / "variant.onnx"
        quantize_model(fp32, out, calibration, spec=spec, force=config)
        session = new_session(str(out))
        diffs = [np.abs(session.run(["logits"], f)[0] - r).max() for f, r in zip(calibration.feeds, reference)]
        print(f"  {label}: {out.stat().st_size / 1e6:.1f} MB, |logit - FP32| mean {np.mean(diffs):.4f}, "
              f"max {np.max(diffs):.4f} over {len(diffs)} calibration texts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()

    from test_deberta import make_tiny_deberta

    from app.core.store import ConvertConfig, convert
    from app.core.tasks.runner import new_session

    print(f"machine: {machine.describe()}")
    work = Path(tempfile.mkdtemp(prefix="bench-deberta-"))
    start = time.perf_counter()
    folder = make_tiny_deberta(work / "deberta-v3-base-random", "sequence-classification",
                               labels=("entailment", "neutral", "contradiction"), **BASE)
    print(f"checkpoint: {sum(f.stat().st_size for f in folder.glob('*.safetensors')) / 1e6:.1f} MB safetensors "
          f"({time.perf_counter() - start:.0f} s to build)")
    start = time.perf_counter()
    entry = convert(str(folder), ConvertConfig(), root=work / "store")
    seconds = time.perf_counter() - start
    q = entry.manifest["quantization"]
    fp32_file, int8_file = entry.fp32_dir / "model.onnx", entry.int8_dir / "model.onnx" if entry.int8_dir else None
    print(f"convert: {seconds:.1f} s; guard ({q['calibration']}): {q['explanation']}")
    for c in q["candidates"]:
        a = c["agreement"]
        print(f"  - {c['settings']}: {a['agreement']:.2%} same label, cosine {a['cosine']:.5f}, "
              f"{'passed' if c['passed'] else 'below target'} ({c['seconds']:.1f} s)")
    if q["chosen"]:
        kept = q["chosen"]["config"]["keep_fp32"]
        print(f"  MatMuls kept entirely in FP32 by the guard: {kept or 'none'}")
        print(f"  outlier channels handled (MatMul: channels): {q['outlier_channels'] or 'none'}")
    if int8_file is None:
        print("no INT8 kept: nothing to time")
        return
    a, b = fp32_file.stat().st_size, int8_file.stat().st_size
    print(f"files: FP32 {a / 1e6:.1f} MB, INT8 {b / 1e6:.1f} MB = {b / a:.1%} of FP32 (goal <= 30%)")

    import onnx

    ops = {}
    for n in onnx.load(int8_file, load_external_data=False).graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"INT8 graph: {ops.get('DynamicQuantizeMatMul', 0)} DynamicQuantizeMatMul, {ops.get('MatMul', 0)} FP32 "
          f"MatMul (attention products, relative terms, side paths, head), {ops.get('GatherElements', 0)} "
          f"GatherElements, {ops.get('MultiHeadAttention', 0)} MultiHeadAttention")

    sensitivity_report(entry, work)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(1, args.seq)).astype(np.int64)  # (batch, seq)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    sessions = {"fp32": new_session(str(fp32_file), args.threads), "int8": new_session(str(int8_file), args.threads)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)
    for r in range(args.rounds):
        for name in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            for _ in range(args.runs):
                t = time.perf_counter()
                sessions[name].run(None, feed)
                times[name].append((time.perf_counter() - t) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    p95 = {k: sorted(v)[int(0.95 * (len(v) - 1))] for k, v in times.items()}
    print(f"latency, batch 1 x {args.seq}, {args.threads} threads, {args.rounds} rounds x {args.runs} runs:")
    for k in sessions:
        print(f"  {k}: median {med[k]:.1f} ms, p95 {p95[k]:.1f} ms")
    print(f"INT8 is {med['fp32'] / med['int8']:.2f}x faster than our fused FP32 (goal >= 2x)")
    a32 = dict(zip([o.name for o in sessions["fp32"].get_outputs()], sessions["fp32"].run(None, feed)))["logits"]
    a8 = dict(zip([o.name for o in sessions["int8"].get_outputs()], sessions["int8"].run(None, feed)))["logits"]
    print(f"logits at {args.seq} tokens: FP32 {np.round(a32, 4).tolist()}, INT8 {np.round(a8, 4).tolist()}")


if __name__ == "__main__":
    main()
