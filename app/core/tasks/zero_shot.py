"""Zero-shot classification: labels the user types, scored by an NLI classifier, as transformers'
`ZeroShotClassificationPipeline` computes it.

A mode of text-classification models, not a graph of its own: an NLI model (`...ForSequenceClassification` whose
id2label has an "entailment" label) is exported, quantized and guarded as a classifier; this plug-in runs it on
(text, hypothesis) pairs. `modes_of` in `app.core.tasks` offers it for such models (`runs_on`, `accepts`).

  text, labels ─ template.format(label) ─► (text, hypothesis) pairs ─ one model call each ─► NLI logits [L, C]
     single-label: softmax over the labels of the entailment logits
     multi-label (or one label): per label, softmax of [contradiction, entailment]
        contradiction = logit 0, or the last one when entailment is 0 (the pipeline's rule)

Pairs are tokenized with `only_first` truncation (the text is cut, the hypothesis never), one pair per call:
dynamic INT8 takes one activation range per call, so a batch would make one label's score depend on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.errors import InputError
from app.core.tasks.base import PredictRequest, softmax
from app.core.tasks.classification import ClassificationTask, LabelScore

DEFAULT_TEMPLATE = "This example is {}."
MAX_LABELS = 100  # each label is one model call per text; past this a typo in a pasted list is likelier than intent


def entailment_index(labels: Sequence[str]) -> int | None:
    """The model label the pipeline reads as entailment: the first starting with 'entail' (any case)."""
    return next((i for i, label in enumerate(labels) if label.lower().startswith("entail")), None)


def parse_labels(labels: str | Sequence[str]) -> tuple[str, ...]:
    """'a, b,,c' → ('a', 'b', 'c'), as the pipeline splits a label string; a sequence is stripped the same way."""
    parts = labels.split(",") if isinstance(labels, str) else list(labels)
    return tuple(p.strip() for p in parts if p.strip())


def hypotheses(labels: Sequence[str], template: str) -> list[str]:
    """One hypothesis per candidate label; InputError for an empty, duplicated or oversized list or a bad template."""
    if not labels:
        raise InputError("Give at least one candidate label (--labels \"sports, politics, science\").")
    if len(labels) > MAX_LABELS:
        raise InputError(f"{len(labels)} candidate labels: at most {MAX_LABELS} are scored at once (each is one model "
                         "call per text). Split the list.")
    seen = set()
    for label in labels:
        if label in seen:
            raise InputError(f"The candidate label {label!r} is given twice; give each label once.")
        seen.add(label)
    try:
        filled = [template.format(label) for label in labels]
    except (IndexError, KeyError, ValueError) as e:
        raise InputError(f"The hypothesis template {template!r} cannot be filled ({e}); put {{}} where the label "
                         "goes, e.g. \"This example is {}.\"") from e
    if filled[0] == template:
        raise InputError(f"The hypothesis template {template!r} has no {{}} for the label; e.g. \"This text is about "
                         "{}.\"")
    return filled


def scores_from_logits(logits: np.ndarray, entailment: int, multi_label: bool) -> np.ndarray:
    """[labels, NLI classes] logits → one score per candidate label, as the pipeline's postprocess."""
    logits = np.asarray(logits, np.float64)  # (labels, classes)
    if multi_label or len(logits) == 1:
        contradiction = -1 if entailment == 0 else 0
        return softmax(logits[:, [contradiction, entailment]])[:, 1]
    return softmax(logits[:, entailment])


@dataclass(frozen=True)
class ZeroShotRequest(PredictRequest):
    """A PredictRequest with the candidate labels; `texts` are the texts to classify."""

    labels: tuple[str, ...] = ()
    hypothesis_template: str = DEFAULT_TEMPLATE
    multi_label: bool = False


@dataclass(frozen=True)
class ZeroShotResult:
    sequence: str
    scores: tuple[LabelScore, ...]  # best first; `index` is the label's position among the candidates
    multi_label: bool
    truncated: bool = False  # the text was cut to fit the model with a hypothesis
    latency_ms: float = 0.0  # model time of all the label calls for this text

    @property
    def label(self) -> str:
        return self.scores[0].label

    @property
    def score(self) -> float:
        return self.scores[0].score

    def chosen(self) -> frozenset[str]:
        """What the answer is: the top label, or every label above 0.5 when they are independent."""
        return frozenset(s.label for s in self.scores if s.score > 0.5) if self.multi_label else frozenset([self.label])

    def to_dict(self) -> dict:
        """The pipeline's output (sequence, labels, scores) plus what we measure."""
        return {"sequence": self.sequence, "labels": [s.label for s in self.scores],
                "scores": [s.score for s in self.scores], "multi_label": self.multi_label,
                "truncated": self.truncated, "latency_ms": round(self.latency_ms, 3)}


def require_nli(task: str, labels: Sequence[str], what: str = "This model") -> int:
    """The entailment label's index, or an InputError saying why the model cannot do zero-shot."""
    if task != "text-classification":
        raise InputError(f"{what} is a {task} model; zero-shot classification needs an NLI classifier (e.g. "
                         "MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli).")
    index = entailment_index(labels)
    if index is None or len(labels) < 2:
        raise InputError(f"{what} has the labels {', '.join(labels) or '(none)'}: no 'entailment' label, so it is not "
                         "an NLI model and cannot score candidate labels. Pick an NLI model (trained on MNLI, e.g. "
                         "MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli), or classify without --labels.")
    return index


def classify(runner, text: str, labels: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
             multi_label: bool = False) -> ZeroShotResult:
    """Score the candidate labels for one text with one model (a Runner)."""
    spec = runner.spec
    entailment = require_nli(spec.task, spec.labels, f"The {spec.architecture} model")
    if not isinstance(text, str) or not text.strip():
        raise InputError("The text is empty. Type the text to classify.")
    pairs = hypotheses(labels, template)
    rows, total_ms, truncated = [], 0.0, False
    for hypothesis in pairs:
        batch, encodings = runner.tokenizer.batch([text], [hypothesis], truncation="only_first")
        outputs, ms = runner.run(batch.feeds(runner.input_names))
        rows.append(outputs["logits"][0])
        total_ms += ms
        truncated = truncated or bool(encodings[0].overflowing)
    scores = scores_from_logits(np.stack(rows), entailment, multi_label)  # (labels,)
    order = sorted(range(len(labels)), key=lambda i: -scores[i])
    return ZeroShotResult(sequence=text, scores=tuple(LabelScore(labels[i], float(scores[i]), i) for i in order),
                          multi_label=multi_label, truncated=truncated, latency_ms=total_ms)


@dataclass(frozen=True)
class ZeroShotData:
    """A labelled file (text, gold label) and the candidate labels to choose among."""

    examples: tuple  # app.core.eval.TextExample
    path: Path
    labels: tuple[str, ...]
    gold: tuple[int, ...]  # each example's label as an index into `labels`
    hypothesis_template: str = DEFAULT_TEMPLATE
    task: str = "zero-shot-classification"


# --- the plug-in ---------------------------------------------------------------------------------------------

class ZeroShotTask(ClassificationTask):
    """The classification graph, guard and calibration; its own predict, agreement and eval."""

    name = "zero-shot-classification"
    title = "Zero-shot classification"
    view = "zero-shot"
    hub_tags = ("zero-shot-classification",)
    architecture_suffixes = ()  # never chosen by architecture: a mode of the classifiers it `accepts`
    runs_on = "text-classification"
    agreement_words = "same top label"
    data_formats = "Labelled texts (*.tsv *.csv *.jsonl), with the candidate labels given"

    def accepts(self, labels: Sequence[str]) -> bool:
        return len(labels) >= 2 and entailment_index(labels) is not None

    def check(self, request: PredictRequest) -> None:
        if not request.texts:
            raise InputError("Give --text: the text to classify.")
        labels = getattr(request, "labels", ())
        hypotheses(labels, getattr(request, "hypothesis_template", DEFAULT_TEMPLATE))

    def predict(self, runner, request: PredictRequest) -> list[ZeroShotResult]:
        self.check(request)
        return [classify(runner, text, request.labels, template=request.hypothesis_template,
                         multi_label=request.multi_label) for text in request.texts]

    def agree(self, fp32_result, int8_result) -> bool:
        return all(a.chosen() == b.chosen() for a, b in zip(fp32_result, int8_result))

    def result_rows(self, fp32_result, int8_result):
        rows = []
        for n, (a, b) in enumerate(zip(fp32_result, int8_result)):
            if len(fp32_result) > 1:
                rows.append((f"text {n + 1}", "", ""))
            for i in range(len(a.scores)):
                rows.append(("label" if i == 0 else "", *[f"{r.scores[i].label} ({r.scores[i].score:.4f})"
                                                          for r in (a, b)]))
            rows.append(("latency", f"{a.latency_ms:.1f} ms", f"{b.latency_ms:.1f} ms"))
            if a.truncated:
                rows.append(("", "(the text was cut to fit the model with each hypothesis)", ""))
        return rows

    def load_data(self, path: Path, *, labels: str | Sequence[str] = (), template: str = DEFAULT_TEMPLATE,
                  **options) -> ZeroShotData:
        """A classification file whose gold labels are all among the candidates (matched exactly, then by case)."""
        from app.core.eval import load_data

        candidates = parse_labels(labels)
        hypotheses(candidates, template)
        data = load_data(path, **options)
        if data.task != "text-classification":
            raise InputError(f"{path} is {data.task} data; zero-shot classification evaluates on labelled texts "
                             "(TSV, CSV or JSONL with a text and a label column).")
        folded = [c.lower() for c in candidates]
        gold = []
        for e in data.examples:
            if e.label in candidates:
                gold.append(candidates.index(e.label))
            elif e.label.lower() in folded:
                gold.append(folded.index(e.label.lower()))
            else:
                raise InputError(f"{data.path}, {e.where}: label {e.label!r} is not one of the candidate labels "
                                 f"({', '.join(candidates)}). Add it to --labels or fix the file.")
        return ZeroShotData(examples=data.examples, path=data.path, labels=candidates, gold=tuple(gold),
                            hypothesis_template=template)

    def evaluate(self, fp32_runner, int8_runner, data: ZeroShotData, *, limit=None, progress=None, cancel=None):
        """Accuracy and macro-F1 of the top candidate label; agreement = the same top label."""
        import time

        from app.core.eval import (
            MAX_DISAGREEMENTS,
            Disagreement,
            EvalResult,
            ModelEval,
            classification_metrics,
        )
        from app.core.progress import check_cancel, report

        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be at least 1 (got {limit})")
        for name, runner in (("FP32", fp32_runner), ("INT8", int8_runner)):
            require_nli(runner.spec.task, runner.spec.labels, f"The {name} model")
        examples = data.examples[:limit] if limit else data.examples
        total = len(examples)
        preds = {"fp32": [], "int8": []}
        latency = {"fp32": 0.0, "int8": 0.0}
        wall = {"fp32": 0.0, "int8": 0.0}
        disagreements = []
        report(progress, "eval", 0, total, f"{total} examples × {len(data.labels)} labels")
        for n, e in enumerate(examples):
            check_cancel(cancel)
            out = {}
            for name, runner in (("fp32", fp32_runner), ("int8", int8_runner)):
                start = time.perf_counter()
                out[name] = classify(runner, e.text, data.labels, template=data.hypothesis_template)
                wall[name] += time.perf_counter() - start
                latency[name] += out[name].latency_ms
                preds[name].append(out[name].scores[0].index)
            a, b = out["fp32"], out["int8"]
            if a.label != b.label:
                disagreements.append(Disagreement(where=e.where, input=e.text, gold=(data.labels[data.gold[n]],),
                                                  fp32=a.label, int8=b.label, fp32_score=a.score, int8_score=b.score))
            report(progress, "eval", n + 1, total, f"{n + 1} of {total}")
        gold = list(data.gold[:total])
        models = {name: ModelEval(classification_metrics(gold, preds[name]), latency[name] / total, wall[name])
                  for name in ("fp32", "int8")}
        return EvalResult(task=self.name, data_path=data.path, examples=total, fp32=models["fp32"],
                          int8=models["int8"], agreement=1 - len(disagreements) / total,
                          disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]), n_disagreements=len(disagreements),
                          details={"candidate_labels": list(data.labels),
                                   "hypothesis_template": data.hypothesis_template})


TASK = ZeroShotTask()
