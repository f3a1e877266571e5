"""Text classification post-processing, as transformers' text-classification pipeline does it.

Logits → scores with softmax (single-label), sigmoid (multi-label or a single output) or nothing (regression),
labels from the model's id2label, sorted best first and cut to top-k. Pre-processing is the tokenizer's
(`TextTokenizer.batch`): one text or a (text, text_pair) pair per row, truncated to the model's maximum length —
unlike the pipeline, which fails on over-long text, we truncate and say so in `ClassificationResult.truncated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.core.spec import ModelSpec

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
