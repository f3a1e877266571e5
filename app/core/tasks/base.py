"""The task plug-in protocol: everything task-specific hangs from one `Task` object (DESIGN.md §13).

  config "architectures" suffix ─► task ─┬─ build_head(builder, x)        graph outputs
                                         ├─ calibration / agreement       the accuracy guard
                                         ├─ predict / agree / rows / json Try it and `predict`
                                         ├─ load_data / evaluate / metrics `eval`, Compare and the report
                                         └─ view                          which Try-it view the GUI shows

A task module defines one subclass and `TASK = ThatTask()`; `app.core.tasks.TASKS` lists the modules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class PredictRequest:
    """What a user typed, for any task; each task checks the fields it needs (`Task.check`)."""

    texts: tuple[str, ...] = ()
    text_pair: str | None = None
    question: str | None = None
    context: str | None = None
    query: str | None = None
    top_k: int | None = None
    max_answer_len: int = 15
    allow_no_answer: bool = False
    aggregation: str = "simple"
    # text generation: the prompt and how to continue it (temperature 0: greedy; top_k above samples too)
    prompt: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity over the last axis."""
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Task(ABC):
    """A task plug-in; a subclass missing one of the abstract methods cannot be instantiated."""

    name: ClassVar[str]  # "text-classification"
    title: ClassVar[str]  # "Text classification", as the GUI and reports say it
    view: ClassVar[str]  # the GUI's Try-it view: "classification", "qa", "entities", "search"
    hub_tags: ClassVar[tuple[str, ...]] = ()  # the Hub's pipeline tags for this task, searched on the Choose page
    architecture_suffixes: ClassVar[tuple[str, ...]]  # transformers class-name suffixes, e.g. "ForQuestionAnswering"
    pretraining_suffixes: ClassVar[tuple[str, ...]] = ()  # also accepted (their head is dropped), not advertised
    has_labels: ClassVar[bool] = False  # reads id2label
    output_names: ClassVar[tuple[str, ...]]
    # metric key → (display name, factor to percent or points); the first is the headline metric
    metrics: ClassVar[dict[str, tuple[str, float]]] = {}
    agreement_words: ClassVar[str] = "same answer"  # "FP32 and INT8 give the <words> on 99% of examples"
    data_formats: ClassVar[str] = ""  # the labelled files `load_data` reads, as a file-dialog filter
    data_folders: ClassVar[str] = ""  # the folders it reads too, in words ("A BEIR folder"); "" when none
    whole_set_agreement: ClassVar[bool] = False  # the guard's agreement compares examples with each other

    # --- export ---------------------------------------------------------------------------------
    def head_config(self, folder: Path) -> Any:
        """What the head needs from the model folder beyond config.json (e.g. pooling); recorded in the manifest."""
        return None

    @abstractmethod
    def build_head(self, builder, x: str) -> None:
        """Emit the graph outputs from the encoder's last hidden state `x` [B, S, H]."""

    # --- the accuracy guard ---------------------------------------------------------------------
    @abstractmethod
    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        """Built-in examples (path None) or the user's file → (examples, description)."""

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict[str, np.ndarray]]:
        """One feed per example (dynamic INT8 takes one activation range per call); here, examples are texts."""
        return [tokenizer.batch([t], max_length=max_length)[0].feeds(spec.input_names) for t in examples]

    @abstractmethod
    def agreement(self, spec, reference: list[dict], outputs: list[dict],
                  feeds: list[dict]) -> tuple[list[bool], list[float]]:
        """Per calibration example: does INT8 give the same answer as FP32, and the cosine of their scores."""

    # --- predict (Try it, `predict`) -------------------------------------------------------------
    def check(self, request: PredictRequest) -> None:
        """Raise InputError when the request lacks what this task needs."""

    @abstractmethod
    def predict(self, runner, request: PredictRequest):
        """The task's answer for one model (a runner) to what the user typed."""

    @abstractmethod
    def agree(self, fp32_result, int8_result) -> bool:
        """Do the two models give the same answer, as this task counts it."""

    def result_json(self, result) -> Any:
        """One model's answer for `--json`: here, one result per text (each with `to_dict()`), a lone one unwrapped."""
        items = [r.to_dict() for r in result]
        return items[0] if len(items) == 1 else items

    @abstractmethod
    def result_rows(self, fp32_result, int8_result) -> list[tuple[str, str, str]]:
        """(name, FP32 cell, INT8 cell) rows for the command line's side-by-side table."""

    # --- eval -------------------------------------------------------------------------------------
    @abstractmethod
    def load_data(self, path: Path, **options):
        """A labelled file (or folder) in a format this task evaluates on; InputError naming file and line."""

    @abstractmethod
    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        """Both models on `data`: metrics, agreement and disagreements as an `EvalResult`."""
