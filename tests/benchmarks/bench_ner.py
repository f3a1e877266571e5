"""Benchmark (not a test): NER with the real fine-tuned `../shared/models/minilm-conll` on the whole CoNLL-2003
validation set `../shared/data/conll2003_valid.txt` (3250 sentences; neither is copied into the repo, the
script exits with a message when they are absent).

- `app.core.store.convert` into a temporary store: fused FP32 + the accuracy guard's INT8;
- entity F1 (exact span and type, conlleval / seqeval style) of transformers' FP32 model, our FP32 and our
  INT8, every word tagged with its first sub-token's label, the words joined by single spaces into the text;
- the share of sentences whose FP32 and INT8 entities are identical; model ms per sentence, one sentence per
  model call (`app.core.tasks.ner.evaluate_ner`: FP32 and INT8 alternate sentence by sentence, so both see
  the same machine state). transformers runs first, on its own, so its threads never compete with ours.

Goals: our FP32 within 0.3 F1 points of transformers, INT8 drop <= 0.3 points, >= 99% identical sentences.
The machine is a shared 2-core one: compare the latency ratio, not absolute ms across runs. Usage:

    .venv/bin/python tests/benchmarks/bench_ner.py [--limit N --threads 2 --workdir DIR]
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "minilm-conll"
DATA = SHARED / "data" / "conll2003_valid.txt"

import machine  # noqa: E402  (tests/benchmarks/machine.py, beside this script)


def transformers_tags(sentences, threads: int) -> tuple[list[list[str]], float]:
    """transformers FP32: the label of each word's first sub-token; returns (tags, model ms per sentence)."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    tok = transformers.AutoTokenizer.from_pretrained(str(MODEL))
    model = transformers.AutoModelForTokenClassification.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    out, ms = [], 0.0
    for s in sentences:
        text = " ".join(s.words)
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        if enc["input_ids"].shape[1] > tok.model_max_length:
            raise SystemExit(f"line {s.line}: longer than the model; this reference does not window")
        start = time.perf_counter()
        with torch.no_grad():
            label_ids = model(**enc).logits[0].argmax(-1).tolist()
        ms += (time.perf_counter() - start) * 1000
        starts, pos = [], 0
        for w in s.words:
            starts.append(pos)
            pos += len(w) + 1
        tags: dict[int, str] = {}
        for (a, b), label in zip(offsets, label_ids):
            if a < b:
                tags.setdefault(bisect.bisect_right(starts, a) - 1, model.config.id2label[label])
        out.append([tags.get(w, "O") for w in range(len(s.words))])
    return out, ms / len(sentences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store here (default: a temp dir)")
    args = parser.parse_args()
    if not (MODEL / "config.json").is_file() or not DATA.is_file():
        raise SystemExit(f"needs {MODEL} and {DATA} (see ../shared/*/README.md)")
    print(f"CPU: {machine.describe()}")
    print(f"{MODEL.name}, {DATA.name}, {args.threads} threads")

    from app.core.store import ConvertConfig, convert
    from app.core.tasks import ner
    from app.core.tasks.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        start = time.perf_counter()
        entry = convert(str(MODEL), ConvertConfig(), root=root)
        print(f"convert: {time.perf_counter() - start:.1f} s; {entry.summary()}")
        if entry.int8_dir is None:
            raise SystemExit("the accuracy guard kept the model in FP32; nothing to compare")
        fp32 = Runner.load(entry.fp32_dir, threads=args.threads)
        int8 = Runner.load(entry.int8_dir, threads=args.threads)
        data = ner.load_conll(DATA, labels=fp32.spec.labels)
        sentences = data.sentences[: args.limit] if args.limit else data.sentences
        gold = [list(s.tags) for s in sentences]
        print(f"{len(sentences)} sentences, {sum(len(ner.entity_spans(t)) for t in gold)} gold entities")

        start = time.perf_counter()
        hf_tags, hf_ms = transformers_tags(sentences, args.threads)
        hf = ner.entity_metrics(gold, hf_tags)
        print(f"transformers FP32: {time.perf_counter() - start:.1f} s")
        result = ner.evaluate_ner(fp32, int8, data, limit=args.limit)

    f1_hf, f1_fp32, f1_int8 = hf["f1"], result.fp32.metrics["f1"], result.int8.metrics["f1"]
    ms32, ms8 = result.fp32.mean_latency_ms, result.int8.mean_latency_ms
    rows = [("transformers FP32 (PyTorch)", hf, hf_ms), ("ours FP32 (ORT, fused)", result.fp32.metrics, ms32),
            ("ours INT8 (ORT)", result.int8.metrics, ms8)]
    print(f"\n{'model':<30}{'P':>8}{'R':>8}{'F1':>8}{'ms/sentence':>14}")
    for name, m, ms in rows:
        print(f"{name:<30}{m['precision']:8.2f}{m['recall']:8.2f}{m['f1']:8.2f}{ms:14.2f}")
    per_type = result.details["per_type_f1"]
    print("per-type F1: " + "  ".join(f"{k} {per_type['fp32'][k]:.2f}/{per_type['int8'][k]:.2f}"
                                      for k in per_type["fp32"]) + "  (FP32/INT8)")
    drop = f1_fp32 - f1_int8
    goals = [(f"our FP32 vs transformers: {f1_fp32 - f1_hf:+.2f} pt", abs(f1_fp32 - f1_hf) <= 0.3),
             (f"INT8 drop: {drop:.2f} pt", drop <= 0.3),
             (f"identical entities FP32 vs INT8: {100 * result.agreement:.2f}% of sentences "
              f"({result.n_disagreements} differ)", result.agreement >= 0.99),
             (f"latency INT8 vs FP32: {ms8:.2f} vs {ms32:.2f} ms/sentence, {ms32 / ms8:.2f}x faster", None)]
    print()
    for text, met in goals:
        print(f"- {text}" + ("" if met is None else f"  [{'met' if met else 'NOT met'}]"))
    for d in result.disagreements[:5]:
        print(f"  {d.where}: {d.input[:80]}\n    gold {'; '.join(d.gold)}\n    fp32 {d.fp32}\n    int8 {d.int8}")


if __name__ == "__main__":
    main()
