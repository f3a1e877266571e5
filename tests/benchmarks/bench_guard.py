"""Benchmark (not a test): the accuracy guard's INT8 against every plain `quantize_dynamic` setting, on real data.

On the real fine-tuned `../shared/models/minilm-sst2` and the 2000 labelled phrases of
`../shared/data/sst2_eval_2000.tsv` (neither is copied into the repo; the script skips with a message
when they are absent), all measured in ONE run:

- our fused FP32 graph and the guard's INT8, both from `app.core.store.convert` (built-in calibration set);
- the existing settings: ONNX Runtime's usual pipeline, its transformer fusion and then plain `quantize_dynamic`
  with each setting: default, per_channel, reduce_range, per_channel + reduce_range, QUInt8 weights (default op
  types, so the embedding Gathers are quantized too; `DefaultTensorType` FLOAT because shape inference cannot
  type the contrib ops). The fused graph they quantize is ours with the residual Add + LayerNorm turned into
  SkipLayerNormalization, which is what ORT's optimizer emits (its row "FP32 (ORT fusion)");
- for each: top-1 agreement with FP32 and accuracy on the 2000 phrases, each phrase run alone (batch 1:
  dynamic INT8 takes one activation range per batch, so batching would change INT8's answers), and latency
  at batch 1 × sequence 128.

Latency uses bench_int8.py's method: one long-lived process per model (ONNX Runtime sessions as the
app's: threads spin during a run and stop when it ends, so idle engines steal no cores), blocks interleaved round by round
(2 warm-up runs, then `--runs` timed runs; the order rotates each round), median and p95. The machine is a
shared 2-core one: compare ratios within one run. Usage:

    .venv/bin/python tests/benchmarks/bench_guard.py [--rounds 10 --runs 20 --threads 2 --workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_int8 import ROOT, entry_in, interleave, onnx_bytes, pct, run_child  # noqa: E402

SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "minilm-sst2"
DATA = SHARED / "data" / "sst2_eval_2000.tsv"
MIN_AGREEMENT, MIN_SPEEDUP = 0.995, 1.8

CONVERT = """
import json, sys
from pathlib import Path
from app.core.store import ConvertConfig, convert
entry = convert(sys.argv[1], ConvertConfig(reuse=False), root=Path(sys.argv[2]))
print(json.dumps({"entry": str(entry.path)}))
"""

import machine  # noqa: E402  (tests/benchmarks/machine.py: CPU model and ISA flags)


def plain_settings():
    from onnxruntime.quantization import QuantType

    return {"default": {}, "per_channel": {"per_channel": True}, "reduce_range": {"reduce_range": True},
            "per_channel + reduce_range": {"per_channel": True, "reduce_range": True},
            "QUInt8 weights": {"weight_type": QuantType.QUInt8}}


def ort_fusion(fp32: Path, out: Path) -> None:
    """Our fused graph as ONNX Runtime's optimizer fuses it: MatMul ─ Add(b) ─ Add(skip) ─ LayerNorm becomes
    SkipLayerNormalization (ORT's SkipLayerNormFusion; `optimize_model` on our unfused export does the same)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(fp32))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    fused, drop = {}, set()
    for ln in model.graph.node:
        add = producers.get(ln.input[0])
        if ln.op_type != "LayerNormalization" or add is None or add.op_type != "Add":
            continue
        bias_add = producers.get(add.input[0])
        if bias_add is None or bias_add.op_type != "Add" or bias_add.input[1] not in inits:
            continue
        eps = next(a.f for a in ln.attribute if a.name == "epsilon")
        fused[id(ln)] = helper.make_node("SkipLayerNormalization", [bias_add.input[0], add.input[1], ln.input[1],
                                         ln.input[2], bias_add.input[1]], [ln.output[0]], name=ln.name + "/Skip",
                                         domain="com.microsoft", epsilon=eps)
        drop |= {id(add), id(bias_add)}
    nodes = [fused.get(id(n), n) for n in model.graph.node if id(n) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))


def quantize_plain(fp32: Path, out: Path, options: dict) -> None:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(out), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)


def predictions(model: Path, feeds: list[dict], threads: int):
    """Top-1 class of every example, each run alone, and the softmax scores."""
    import numpy as np
    import onnxruntime as ort

    from app.core.tasks.runner import session_options

    session = ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    logits = np.concatenate([session.run(["logits"], {k: v for k, v in f.items() if k in names})[0] for f in feeds])
    return logits.argmax(-1)  # (examples,)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of idle between latency blocks")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    missing = [str(p) for p in (args.model, args.data) if not p.exists()]
    if missing:
        print(f"skipped: {', '.join(missing)} not found (the real checkpoint and data live in ../shared/)")
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-guard-"))
    work.mkdir(parents=True, exist_ok=True)

    # The guard's choice, exactly as `convert` makes it (in a child: the app's own process).
    store = work / "store"
    convert_s = run_child([sys.executable, "-c", CONVERT, str(args.model), str(store)])[0]
    entry = entry_in(store)
    manifest = json.loads((entry / "manifest.json").read_text())
    fp32 = entry / "fp32" / "model.onnx"
    ort_fp32 = work / "plain" / "ort-fusion.onnx"
    ort_fp32.parent.mkdir(parents=True, exist_ok=True)
    ort_fusion(fp32, ort_fp32)
    models = {"FP32 (fused)": fp32, "FP32 (ORT fusion)": ort_fp32}
    for name, options in plain_settings().items():
        path = work / "plain" / (name.replace(" ", "").replace("+", "-") + ".onnx")
        quantize_plain(ort_fp32, path, options)
        models[name] = path
    quant = manifest["quantization"]
    guard_label = "guard (convert)"
    if (entry / "int8" / "model.onnx").is_file():
        models[guard_label] = entry / "int8" / "model.onnx"

    # Agreement and accuracy: every phrase alone.
    from app.core.calibration import build_calibration
    from app.core.eval import load_data
    from app.core.spec import load_config, spec_from_config

    spec = spec_from_config(load_config(entry / "fp32"))
    data = load_data(args.data)
    texts = [e.text for e in data.examples]
    gold = [int(e.label) if e.label.isdigit() else spec.labels.index(e.label) for e in data.examples]
    feeds = build_calibration(entry / "fp32", spec, examples=texts).feeds
    import numpy as np

    gold = np.array(gold)
    preds = {}
    for name, path in models.items():
        t = time.perf_counter()
        preds[name] = predictions(path, feeds, args.threads)
        print(f"  evaluated {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    # Latency: one process per model, blocks interleaved.
    engines = interleave({name: ("ort", path, sys.executable) for name, path in models.items()}, args)

    ref = preds["FP32 (fused)"]
    fp32_acc = float((ref == gold).mean())
    fp32_ms = statistics.median(engines["FP32 (fused)"].times)
    print(f"minilm-sst2 (6 layers, hidden 384), {len(texts)} SST-2 phrases at batch 1; latency batch 1 x sequence "
          f"128, {args.threads} threads, {args.rounds} interleaved rounds x {args.runs} runs, one process per model")
    header = (f"{'setting':<28} {'agree %':>8} {'flipped':>8} {'acc %':>7} {'Δ pts':>6} {'MB':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'speed-up':>8}")
    print(header)
    rows = {}
    for name in models:
        agree = float((preds[name] == ref).mean())
        acc = float((preds[name] == gold).mean())
        med = statistics.median(engines[name].times)
        rows[name] = (agree, fp32_ms / med)
        print(f"{name:<28} {agree * 100:>8.2f} {int((preds[name] != ref).sum()):>8} {acc * 100:>7.2f} "
              f"{(acc - fp32_acc) * 100:>+6.2f} {onnx_bytes(models[name]) / 1e6:>6.1f} {med:>7.2f} "
              f"{pct(engines[name].times, 0.95):>7.2f} {fp32_ms / med:>7.2f}x")

    chosen = quant.get("chosen")
    print(f"\nguard's choice: {chosen['settings'] if chosen else 'kept FP32'} — {quant.get('explanation')}")
    print(f"guard tried {len(quant['candidates'])} setting(s) on {quant['calibration']}; convert took "
          f"{convert_s:.0f} s (quantize {manifest['timings'].get('quantize_s')} s)")
    for c in quant["candidates"]:
        a = c["agreement"]
        print(f"  - {c['settings']}: {a['agreement']:.2%} same answer, cosine {a['cosine']:.4f}, {c['seconds']} s"
              f"{' (chosen)' if chosen and c['settings'] == chosen['settings'] else ''}")
    if guard_label in rows:
        agree, speed = rows[guard_label]
        plain = {k: v for k, v in rows.items() if k not in ("FP32 (fused)", "FP32 (ORT fusion)", guard_label)}
        print(f"goal: agreement >= {MIN_AGREEMENT:.1%}: {agree:.2%} {'met' if agree >= MIN_AGREEMENT else 'NOT met'}; "
              f"speed-up >= {MIN_SPEEDUP}x: {speed:.2f}x {'met' if speed >= MIN_SPEEDUP else 'NOT met'}")
        worse = [f"{k} ({'agreement' if v[0] > agree else ''}{' and ' if v[0] > agree and v[1] > speed else ''}"
                 f"{'speed' if v[1] > speed else ''})" for k, v in plain.items() if v[0] > agree or v[1] > speed]
        print("better than every existing setting on both axes: " +
              ("yes" if not worse else "no; beaten by " + ", ".join(worse)))
    print("note: a shared 2-core machine; latency medians move by up to ~30% between runs, ratios within a run less.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
