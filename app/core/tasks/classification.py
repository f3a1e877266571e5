"""Text classification: the task plug-in (first-token head, calibration, label agreement, predict, eval) and its
post-processing, as transformers' text-classification pipeline does it.

Logits → scores with softmax (single-label), sigmoid (multi-label or a single output) or nothing (regression),
labels from the model's id2label, sorted best first and cut to top-k. Pre-processing is the tokenizer's
(`TextTokenizer.batch`): one text or a (text, text_pair) pair per row, truncated to the model's maximum length —
unlike the pipeline, which fails on over-long text, we truncate and say so in `ClassificationResult.truncated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from app.core.errors import InputError
from app.core.export.families.base import BATCH
from app.core.spec import ModelSpec
from app.core.tasks.base import PredictRequest, Task, cosine

Activation = Literal["softmax", "sigmoid", "none"]


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float
    index: int  # position in id2label

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score}


@dataclass(frozen=True)
class ClassificationResult:
    label: str  # best label
    score: float  # its score
    scores: tuple[LabelScore, ...]  # best first; top-k of them (all labels when top_k is None)
    truncated: bool = False  # the input was longer than the model's maximum length and was cut
    latency_ms: float = 0.0  # model time of the batch that produced it, divided by the batch size

    def __post_init__(self):
        if not self.scores:
            raise ValueError("scores: a classification result needs at least one label score")

    def to_dict(self) -> dict:
        return {"label": self.label, "score": self.score, "scores": [s.to_dict() for s in self.scores],
                "truncated": self.truncated, "latency_ms": round(self.latency_ms, 3)}


def activation_for(spec: ModelSpec, problem_type: str | None = None) -> Activation:
    """What the pipeline applies by default: none for regression, sigmoid for multi-label or one output,
    softmax otherwise."""
    if problem_type == "regression":
        return "none"
    if spec.multi_label or problem_type == "multi_label_classification" or len(spec.labels) == 1:
        return "sigmoid"
    return "softmax"


def scores_from_logits(logits: np.ndarray, activation: Activation) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)  # (batch, labels)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits


def postprocess(logits: np.ndarray, labels: tuple[str, ...], *, activation: Activation, top_k: int | None = None,
                truncated: list[bool] | None = None, latency_ms: float = 0.0) -> list[ClassificationResult]:
    """(batch, labels) logits → one result per row, label scores best first."""
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"logits: expected shape (batch, {len(labels)}), got {logits.shape}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: must be at least 1 (got {top_k})")
    scores = scores_from_logits(logits, activation)  # (batch, labels)
    results = []
    for row, row_scores in enumerate(scores):
        # Stable sort, best first; ties keep id order, as Python's sort in the pipeline does.
        order = sorted(range(len(labels)), key=lambda i: -row_scores[i])
        ranked = tuple(LabelScore(labels[i], float(row_scores[i]), i) for i in order)
        ranked = ranked if top_k is None else ranked[:top_k]
        results.append(ClassificationResult(label=ranked[0].label, score=ranked[0].score, scores=ranked,
                                            truncated=bool(truncated[row]) if truncated else False,
                                            latency_ms=latency_ms))
    return results


# --- the plug-in ---------------------------------------------------------------------------------------------

class ClassificationTask(Task):
    name = "text-classification"
    title = "Text classification"
    view = "classification"
    hub_tags = ("text-classification",)
    architecture_suffixes = ("ForSequenceClassification",)
    has_labels = True
    output_names = ("logits",)
    metrics = {"accuracy": ("Accuracy", 100.0), "macro_f1": ("Macro-F1", 100.0)}
    data_formats = "Labelled texts (*.tsv *.csv *.jsonl)"
    agreement_words = "same label"

    def build_head(self, builder, x: str) -> None:
        #  x ─ Gather(token 0) ─ family's sequence head (pooler / pre-classifier / dense) ─► logits [B, labels]
        labels = len(builder.spec.labels)
        cls = builder.g.node("Gather", [x, builder.g.const(0)], "/head/cls/Gather", axis=1)  # [B, H]
        builder.g.output(builder.sequence_head(cls, labels), "logits", [BATCH, labels])

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import SENTENCES, with_fragments

        if path is None:
            texts = with_fragments(SENTENCES)
            return [(t, None) for t in texts], f"built-in, {len(texts)} texts and phrases"
        from app.core.eval import ClassificationData, load_data, read_lines

        if Path(path).suffix == ".txt":
            texts = read_lines(path)
            return [(t, None) for t in texts], f"{Path(path).name}, {len(texts)} texts"
        data = load_data(path)
        if not isinstance(data, ClassificationData):
            raise InputError(f"{path} is {data.task} data; a text classification model needs texts (.txt, TSV, CSV "
                             "or JSONL) for its calibration.")
        return [(e.text, e.text_pair) for e in data.examples], f"{Path(path).name}, {len(data.examples)} texts"

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict]:
        feeds = []
        for example in examples:
            text, pair = (example, None) if isinstance(example, str) else example
            batch, _ = tokenizer.batch([text], [pair] if pair else None, max_length=max_length)
            feeds.append(batch.feeds(spec.input_names))
        return feeds

    def agreement(self, spec, reference, outputs, feeds):
        multi_label = bool(spec is not None and spec.multi_label)
        # Scores, as users see them: cosine on raw logits is meaningless when logits are near 0.
        activation = "sigmoid" if multi_label else "softmax"
        same, cos = [], []
        for ref, out in zip(reference, outputs):
            a, b = ref["logits"], out["logits"]  # (batch, labels)
            same += list(((a > 0) == (b > 0)).all(-1) if multi_label else a.argmax(-1) == b.argmax(-1))
            cos += list(cosine(scores_from_logits(a, activation), scores_from_logits(b, activation)))
        return same, cos

    def check(self, request: PredictRequest) -> None:
        if not request.texts:
            raise InputError("Give --text: the text to classify.")

    def predict(self, runner, request: PredictRequest) -> list[ClassificationResult]:
        pairs = [request.text_pair] * len(request.texts) if request.text_pair else None
        return runner.classify(list(request.texts), pairs, top_k=request.top_k)

    def agree(self, fp32_result, int8_result) -> bool:
        return all(a.label == b.label for a, b in zip(fp32_result, int8_result))

    def result_rows(self, fp32_result, int8_result):
        rows = []
        for n, (a, b) in enumerate(zip(fp32_result, int8_result)):
            if len(fp32_result) > 1:
                rows.append((f"text {n + 1}", "", ""))
            rows.append(("label", f"{a.label} ({a.score:.4f})", f"{b.label} ({b.score:.4f})"))
            for i in range(1, max(len(a.scores), len(b.scores))):
                rows.append(("", *[f"{r.scores[i].label} ({r.scores[i].score:.4f})" if i < len(r.scores) else ""
                                   for r in (a, b)]))
            rows.append(("latency", f"{a.latency_ms:.1f} ms", f"{b.latency_ms:.1f} ms"))
            if a.truncated:
                rows.append(("", "(the text was cut to the model's maximum length)", ""))
        return rows

    def load_data(self, path: Path, **options):
        from app.core.eval import load_data

        return load_data(path, **options)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        from app.core.eval import evaluate_classification

        return evaluate_classification(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = ClassificationTask()
