"""Token classification (placeholder in the plug-ins branch; the full module lands from the NER work)."""

from __future__ import annotations

from pathlib import Path

from app.core.errors import InputError
from app.core.export.families.base import BATCH, SEQ
from app.core.tasks.base import PredictRequest, Task


def load_conll(path):
    raise NotImplementedError


def guard_agreement(reference, outputs, feeds, labels):
    import numpy as np

    same = [bool(((r["logits"].argmax(-1) == o["logits"].argmax(-1)) | ~f["attention_mask"].astype(bool)).all())
            for r, o, f in zip(reference, outputs, feeds)]
    return same, [1.0] * len(same)


def entities(runner, texts, aggregation="simple"):
    raise NotImplementedError


def evaluate_ner(*a, **k):
    raise NotImplementedError


# --- the plug-in ---------------------------------------------------------------------------------------------

class TokenClassificationTask(Task):
    name = "token-classification"
    title = "Named entities"
    view = "entities"
    hub_tags = ("token-classification",)
    architecture_suffixes = ("ForTokenClassification",)
    has_labels = True
    output_names = ("logits",)
    metrics = {"f1": ("Entity F1", 1.0), "precision": ("Entity precision", 1.0), "recall": ("Entity recall", 1.0)}
    agreement_words = "same entities"

    def build_head(self, builder, x: str) -> None:
        #  x ─ Linear(classifier) ─► logits [B, S, labels]
        labels = len(builder.spec.labels)
        logits = builder.linear(x, "classifier", builder.spec.hidden_size, labels, "/classifier")
        builder.g.output(logits, "logits", [BATCH, SEQ, labels])

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import QA_EXAMPLES, SENTENCES
        from app.core.tasks.classification import read_lines

        if path is None:  # everyday sentences and encyclopedic ones, full of people, places and organisations
            texts = list(SENTENCES) + [s.strip() + "." for context, _ in QA_EXAMPLES for s in context.split(". ") if s]
            return texts, f"built-in, {len(texts)} sentences"
        if Path(path).suffix == ".txt":
            texts = read_lines(path)
            return texts, f"{Path(path).name}, {len(texts)} texts"
        data = load_conll(path)
        return [" ".join(s.words) for s in data.sentences], f"{Path(path).name}, {len(data.sentences)} sentences"

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict]:
        return [tokenizer.batch([t], max_length=max_length)[0].feeds(spec.input_names) for t in examples]

    def agreement(self, spec, reference, outputs, feeds):
        return guard_agreement(reference, outputs, feeds, spec.labels)

    def check(self, request: PredictRequest) -> None:
        if not request.texts:
            raise InputError("Give --text: the text to find named entities in.")

    def predict(self, runner, request: PredictRequest):
        return entities(runner, list(request.texts), aggregation=request.aggregation)

    def agree(self, fp32_result, int8_result) -> bool:
        return all([(e.label, e.start, e.end) for e in a] == [(e.label, e.start, e.end) for e in b]
                   for a, b in zip(fp32_result, int8_result))

    def result_json(self, result):
        items = [[e.to_dict() for e in text] for text in result]
        return items[0] if len(items) == 1 else items

    def result_rows(self, fp32_result, int8_result):
        rows = []
        for n, (a, b) in enumerate(zip(fp32_result, int8_result)):
            if len(fp32_result) > 1:
                rows.append((f"text {n + 1}", "", ""))
            cells = [[f"{e.label} {e.word!r} [{e.start}:{e.end}] {e.score:.3f}" for e in r] or ["(none)"]
                     for r in (a, b)]
            for i in range(max(map(len, cells))):
                rows.append(("entities" if i == 0 else "", *[c[i] if i < len(c) else "" for c in cells]))
        return rows

    def load_data(self, path: Path, **options):
        return load_conll(path)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        return evaluate_ner(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = TokenClassificationTask()
