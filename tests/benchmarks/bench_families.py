"""Benchmark (not a test): ModernBERT and MPNet at base shapes, random weights — what the guard keeps in FP32,
sizes, and latency of plain FP32, fused FP32 and INT8 at batch 1 x sequence 128.

For each family a random-weight checkpoint of the real base shape is built with the tests' helpers
(ModernBERT-base: 22 layers, hidden 768, 12 heads, GeGLU 1152, vocab 50368, a local window of 128 with every
third layer global; MPNet-base: 12 layers, hidden 768, 12 heads, FFN 3072, vocab 30527), as a sequence
classifier; `--noise` is the std of the noise added to transformers' initialisation (the tests' 0.08 by
default, which makes deep random networks chaotic: any rounding grows layer by layer; 0 keeps the init). Then:

- `convert` (store, default guard target, built-in calibration): the setting chosen, the MatMuls it kept in
  FP32 and the outlier channels it treated; when no setting passes (random weights give near-ties), INT8 is
  forced with the default QuantizeConfig and the output says so;
- the guard's sensitivity ranking (each MatMul's relative output error when only it is fake-quantized), the
  top ones with their layer type (ModernBERT: global or local attention);
- which graph paths INT8 left untouched: rotary cos/sin, the window mask, MPNet's relative position bias;
- for MPNet, the INT8 model with its relative-position-bias table restored to FP32, to measure what the
  guard's per-row int8 embedding rule costs on that table;
- latency: one ONNX Runtime session per model (the app's thread options), interleaved rounds, medians.

Run it under the shared lock (2 shared cores):

    flock /tmp/pocket-bench.lock .venv/bin/python tests/benchmarks/bench_families.py [--rounds 5 --runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import machine

SEQ, BATCH = 128, 1
SHAPES = {
    "modernbert": dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
                       vocab_size=50368, max_position_embeddings=8192, local_attention=128,
                       global_attn_every_n_layers=3, global_rope_theta=160000.0, local_rope_theta=10000.0),
    "mpnet": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  vocab_size=30527, max_position_embeddings=514),
}


def build(family: str, folder: Path, noise: float) -> Path:
    if family == "modernbert":
        from test_modernbert import make_modernbert

        return make_modernbert(folder, "sequence-classification", noise=noise, **SHAPES[family])
    from test_mpnet import make_mpnet

    return make_mpnet(folder, "sequence-classification", noise=noise, **SHAPES[family])


def session(path, threads: int):
    import onnxruntime as ort

    from app.core.tasks.runner import session_options

    return ort.InferenceSession(str(path) if isinstance(path, Path) else path, session_options(threads),
                                providers=["CPUExecutionProvider"])


def latency(models: dict, vocab: int, rounds: int, runs: int, threads: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(5, min(vocab, 400), (BATCH, SEQ)).astype(np.int64),
            "attention_mask": np.ones((BATCH, SEQ), np.int64)}
    sessions = {name: session(path, threads) for name, path in models.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            s = sessions[name]
            for _ in range(2):
                s.run(None, feed)
            for _ in range(runs):
                start = time.perf_counter()
                s.run(None, feed)
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def restore_fp32_position_bias(int8_path: Path, fp32_path: Path) -> bytes:
    """The INT8 model with MPNet's relative-bias table gathered in FP32 again (the rest unchanged)."""
    import onnx
    from onnx import helper

    model, ref = onnx.load(int8_path), onnx.load(fp32_path)
    prefix = "/encoder/position_bias/int8/"
    chain = [n for n in model.graph.node if n.name.startswith(prefix)]
    if not chain:
        return model.SerializeToString()
    gather_q = next(n for n in chain if n.name.endswith("Gather_q"))
    out = next(n for n in chain if n.name.endswith("/Mul")).output[0]
    table = next(i for i in ref.graph.initializer if i.name.endswith("relative_attention_bias.weight"))
    nodes = [n for n in model.graph.node if not n.name.startswith(prefix)]
    at = list(model.graph.node).index(gather_q)
    nodes.insert(at, helper.make_node("Gather", [table.name, gather_q.input[1]], [out],
                                      name="/encoder/position_bias/Gather", axis=0))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.append(table)
    return model.SerializeToString()


def run_family(family: str, work: Path, args) -> None:
    from app.core.calibration import build_calibration
    from app.core.export import ExportConfig, export_model
    from app.core.hub import ModelRef, local_source
    from app.core.quantize import Model, QuantizeConfig, collect, sensitivity, validate
    from app.core.spec import load_spec
    from app.core.store import ConvertConfig, convert

    print(f"\n== {family}-base shape, random weights (noise {args.noise:g} on transformers' init) ==")
    t = time.perf_counter()
    folder = build(family, work / family, args.noise)
    print(f"checkpoint built in {time.perf_counter() - t:.0f} s")
    plain = export_model(local_source(ModelRef.parse(str(folder))), work / f"{family}-plain", ExportConfig())
    t = time.perf_counter()
    entry = convert(str(folder), ConvertConfig(), root=work / "store")
    q = entry.manifest["quantization"]
    print(f"convert (guard ladder) {time.perf_counter() - t:.0f} s: {q['explanation']}")
    for c in q["candidates"]:
        print(f"  - {c['settings']}: agreement {c['agreement']['agreement']:.2%}, cosine {c['agreement']['cosine']:.4f}"
              f"{' (chosen)' if q['chosen'] and c['settings'] == q['chosen']['settings'] else ''}")
    forced = entry.int8_dir is None
    if forced:
        entry = convert(str(folder), ConvertConfig(force=QuantizeConfig()), root=work / "store-forced")
        print("  no setting met the target on random weights: INT8 forced with the default QuantizeConfig")
    chosen = entry.manifest["quantization"]["chosen"]
    print(f"  kept in FP32 (MatMuls): {list(chosen['config']['keep_fp32']) or 'none'}")
    print(f"  outlier channels treated: {entry.manifest['quantization'].get('outlier_channels') or 'none'}")

    fp32, int8 = entry.fp32_dir / "model.onnx", entry.int8_dir / "model.onnx"
    spec = load_spec(entry.fp32_dir)
    cal = build_calibration(entry.fp32_dir, spec)
    collect(fp32, cal)
    ranked = sensitivity(Model.read(fp32), cal, QuantizeConfig())
    types = spec.options.get("layer_types")
    print("  sensitivity (relative output error when only that MatMul is INT8), worst first:")
    for name, err in ranked[:8]:
        layer = name.split("/")[2] if name.startswith("/encoder/layer.") else ""
        kind = f" [{types[int(layer.split('.')[1])].split('_')[0]}]" if types and layer else ""
        print(f"    {name}{kind}: {err:.4f}")
    if types:
        by = {k: [e for n, e in ranked if n.startswith("/encoder/layer.") and "/attention/" in n
                  and types[int(n.split("/")[2].split(".")[1])] == k] for k in set(types)}
        print("  attention MatMuls, mean error by layer type: "
              + ", ".join(f"{k.split('_')[0]} {np.mean(v):.4f} ({len(v)})" for k, v in sorted(by.items()) if v))
    import onnx

    q_model = onnx.load(int8)
    untouched = {p: sum(1 for n in q_model.graph.node if p in n.name) for p in ("/rotary/", "/window/", "position_bias")}
    quantized = sorted({n.name.rsplit("/", 1)[0] for n in q_model.graph.node if n.op_type == "DynamicQuantizeMatMul"})
    int8_tables = [i.name for i in q_model.graph.initializer if i.name.endswith(".int8")]
    print(f"  INT8 graph: {len(quantized)} DynamicQuantizeMatMul, int8 tables {int8_tables}; FP32 paths kept as they "
          f"are: {', '.join(f'{k} {v} nodes' for k, v in untouched.items() if v)}")
    agreement = validate(int8, cal, spec=spec)
    print(f"  INT8 vs FP32 on the calibration set: agreement {agreement.agreement:.2%}, cosine {agreement.cosine:.5f}")
    models = {"FP32 plain": plain.onnx_path, "FP32 fused": fp32, "INT8": int8}
    if family == "mpnet":
        restored = restore_fp32_position_bias(int8, fp32)
        a = validate(restored, cal, spec=spec)
        print(f"  INT8 with the relative-bias table in FP32: agreement {a.agreement:.2%}, cosine {a.cosine:.5f}")
    sizes = {k: Path(v).stat().st_size / 1e6 for k, v in models.items()}
    ms = latency(models, spec.vocab_size, args.rounds, args.runs, args.threads)
    print(f"  batch {BATCH} x {SEQ}, {args.threads} threads, {args.rounds} rounds x {args.runs} runs (median):")
    for name in models:
        print(f"    {name:11s} {ms[name]:8.1f} ms  {sizes[name]:7.1f} MB")
    print(f"  fused vs plain FP32: {ms['FP32 plain'] / ms['FP32 fused']:.2f}x; INT8 vs fused FP32: "
          f"{ms['FP32 fused'] / ms['INT8']:.2f}x faster, file {sizes['INT8'] / sizes['FP32 fused']:.1%} of FP32"
          f"{' (forced INT8)' if forced else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", type=float, default=0.08,
                        help="std of the noise added to transformers' init (the tests' 0.08; 0 for the init itself)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(machine.describe())
    with tempfile.TemporaryDirectory(prefix="bench-families-", dir=args.workdir) as tmp:
        for family in args.families:
            run_family(family, Path(tmp), args)


if __name__ == "__main__":
    main()
