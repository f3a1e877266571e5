"""Evaluate FP32 and INT8 side by side on labelled data: what every task shares (results, disagreements, file
reading), the dispatch to the task plug-ins, and the classification and SQuAD formats and metrics.

`load_data(path)` reads GLUE TSV, CSV or JSONL (text[, text_pair], label; columns detected or named) or
SQuAD v1.1/v2.0 JSON, checking every row first: a bad file raises `InputError` naming the file, line and
field, never a crash half-way or a silently wrong score. `evaluate(fp32, int8, data)` runs both models in the
same pass and reports accuracy + macro-F1 (classification) or exact match + F1 with the official SQuAD
normalisation (QA), how often the two models agree (same label / same answer text) and where they differ.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import re
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from app.core.errors import InputError
from app.core.progress import ProgressFn, check_cancel, report

DataFormat = Literal["auto", "tsv", "csv", "jsonl", "squad"]
MAX_DISAGREEMENTS = 2000  # kept with the result: the app lists all of them, the report and the CLI the first few

# Column names seen in GLUE and common datasets, most specific first (compared case-insensitively).
TEXT_COLUMNS = ("sentence", "text", "sentence1", "question", "premise", "#1 string", "string1", "question1",
                "content", "review", "document", "input", "query")
# (text, text_pair) columns that come together: MRPC, QNLI, QQP, RTE/MNLI, BoolQ-style, ours.
PAIR_SCHEMES = (("sentence1", "sentence2"), ("#1 string", "#2 string"), ("string1", "string2"),
                ("question", "sentence"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "passage"), ("text", "text_pair"))
LABEL_COLUMNS = ("label", "gold_label", "labels", "quality", "class", "target", "category", "sentiment", "y")


# --- data ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextExample:
    text: str
    text_pair: str | None
    label: str  # as written in the file; matched to the model's labels by name or id in `evaluate`
    line: int  # 1-based line in the file where the row starts

    @property
    def where(self) -> str:
        return f"line {self.line}"


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[str, ...]  # gold answer texts; empty for an unanswerable (SQuAD 2.0) question
    where: str  # "data[0].paragraphs[3].qas[1] (line 120)"

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclass(frozen=True)
class ClassificationData:
    path: Path
    examples: tuple[TextExample, ...]
    text_column: str
    pair_column: str | None
    label_column: str
    task: str = "text-classification"

    def __post_init__(self):
        if not self.examples:
            raise InputError(f"{self.path}: no examples (the file has a header but no rows).")


@dataclass(frozen=True)
class SquadData:
    path: Path
    examples: tuple[QAExample, ...]
    version: str  # "1.1" or "2.0"
    task: str = "question-answering"

    def __post_init__(self):
        if not self.examples:
            raise InputError(f"{self.path}: no questions in data[].paragraphs[].qas[].")

    @property
    def has_impossible(self) -> bool:
        return self.version.startswith("2") or any(e.is_impossible for e in self.examples)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file. Check the path.") from e
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror}).") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start}). "
                         "Save the file as UTF-8 and try again.") from e


def read_lines(path: Path) -> list[str]:
    """A .txt file's non-empty lines, stripped (a user's calibration texts)."""
    texts = [t.strip() for t in _read_text(Path(path)).splitlines() if t.strip()]
    if not texts:
        raise InputError(f"{path}: no texts (one text per line).")
    return texts


def _pick(names: list[str], given: str | None, candidates: tuple[str, ...], what: str, path: Path,
          *, required: bool, taken: tuple[str | None, ...] = ()) -> str | None:
    if given is not None:
        if given not in names:
            raise InputError(f"{path}, line 1: no column {given!r} for the {what}; the columns are "
                             f"{', '.join(map(repr, names))}.")
        return given
    lower = {n.lower().strip(): n for n in names if n not in taken}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    if required:
        raise InputError(f"{path}, line 1: cannot find the {what} column among {', '.join(map(repr, names))}. "
                         f"Name it with --{what.replace(' ', '-')}-column (expected one of "
                         f"{', '.join(candidates[:4])}, ...).")
    return None


def _columns(names: list[str], path: Path, text_column, pair_column, label_column):
    lower = {n.lower().strip(): n for n in names}
    if text_column is None and pair_column is None:
        for first, second in PAIR_SCHEMES:
            if first in lower and second in lower:
                text_column, pair_column = lower[first], lower[second]
                break
    elif pair_column is None:
        for first, second in PAIR_SCHEMES:
            if first == text_column.lower().strip() and second in lower:
                pair_column = lower[second]
                break
    text = _pick(names, text_column, TEXT_COLUMNS, "text", path, required=True)
    label = _pick(names, label_column, LABEL_COLUMNS, "label", path, required=True, taken=(text,))
    pair = _pick(names, pair_column, (), "text pair", path, required=False) if pair_column else None
    if len({text, label, pair} - {None}) != len([c for c in (text, label, pair) if c]):
        raise InputError(f"{path}: the text, text pair and label columns must differ ({text!r}, {pair!r}, {label!r}).")
    return text, pair, label


def _field(value, path: Path, line: int, column: str, *, allow_empty: bool = False) -> str:
    if value is None or (isinstance(value, (dict, list))):
        raise InputError(f"{path}, line {line}, field {column!r}: missing or not a text value.")
    text = str(value)
    if not allow_empty and not text.strip():
        raise InputError(f"{path}, line {line}, field {column!r}: empty. Every row needs a {column}.")
    return text


def delimited_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank row of a CSV or TSV text, where a row starts; TSV quotes are
    literal, as in GLUE's files. A row the csv module cannot parse is an InputError naming the file and line."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(f"{path}, line {line}: cannot be parsed ({e}).") from e
        if any(c.strip() for c in row):
            yield line, row


def delimited_table(path: Path, text: str,
                    delimiter: str) -> tuple[int, list[str], Iterator[tuple[int, list[str]]]]:
    """(header line number, stripped header fields, the rows after it) of a CSV or TSV text with a header row; a
    file without one is an InputError."""
    rows = delimited_rows(path, text, delimiter)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{path}: the file is empty.")
    return first[0], [h.strip() for h in first[1]], rows


def _load_delimited(path: Path, text: str, delimiter: str, text_column, pair_column, label_column):
    _, header, rows = delimited_table(path, text, delimiter)
    tcol, pcol, lcol = _columns(header, path, text_column, pair_column, label_column)
    idx = {name: i for i, name in enumerate(header)}
    examples = []
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(f"{path}, line {line}: {len(row)} fields, but the header has {len(header)} "
                             f"({', '.join(header)}). A stray {'tab' if delimiter == chr(9) else 'comma'} in the text?")
        examples.append(TextExample(
            text=_field(row[idx[tcol]], path, line, tcol),
            text_pair=_field(row[idx[pcol]], path, line, pcol) if pcol else None,
            label=_field(row[idx[lcol]], path, line, lcol).strip(), line=line))
    return ClassificationData(path, tuple(examples), tcol, pcol, lcol)


def json_lines(path: Path, text: str, example: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines text; malformed JSON, a line that is not an
    object (`example` shows one) or a file without lines is an InputError naming the file and line."""
    rows: list[tuple[int, dict]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}, line {n}, column {e.colno}: malformed JSON ({e.msg}).") from e
        if not isinstance(obj, dict):
            raise InputError(f"{path}, line {n}: each line must be a JSON object like {example}.")
        rows.append((n, obj))
    if not rows:
        raise InputError(f"{path}: the file has no JSON lines.")
    return rows


def _load_jsonl(path: Path, text: str, text_column, pair_column, label_column):
    rows = json_lines(path, text, '{"text": "...", "label": "..."}')
    names = list(dict.fromkeys(k for _, obj in rows for k in obj))
    tcol, pcol, lcol = _columns(names, path, text_column, pair_column, label_column)
    examples = []
    for n, obj in rows:
        label = obj.get(lcol)
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise InputError(f"{path}, line {n}, field {lcol!r}: the label must be a name or an integer id "
                             f"(got {json.dumps(label)}).")
        examples.append(TextExample(
            text=_field(obj.get(tcol), path, n, tcol),
            text_pair=_field(obj.get(pcol), path, n, pcol) if pcol else None,
            label=_field(label, path, n, lcol).strip(), line=n))
    return ClassificationData(path, tuple(examples), tcol, pcol, lcol)


class _Lines:
    """Line numbers of strings in a JSON text; None when absent or when the JSON is all on one line.

    Questions come in document order, so each lookup continues from the last one (a whole-file search per
    question made loading a SQuAD file quadratic); a string not found further on is searched from the top.
    """

    def __init__(self, text: str):
        self.text, self.multiline = text, "\n" in text.strip()
        self.pos, self.line = 0, 1

    def of(self, needle: str) -> int | None:
        if not self.multiline:
            return None
        pos = self.text.find(needle, self.pos)
        if pos < 0:
            pos = self.text.find(needle)
            return self.text.count("\n", 0, pos) + 1 if pos >= 0 else None
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def load_squad(path: Path, text: str | None = None) -> SquadData:
    """SQuAD v1.1 / v2.0 JSON: data[].paragraphs[].{context, qas[].{id, question, answers[], is_impossible}}."""
    path = Path(path)
    text = _read_text(path) if text is None else text
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}, line {e.lineno}, column {e.colno}: malformed JSON ({e.msg}).") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise InputError(f"{path}, line 1, field 'data': not SQuAD JSON (expected an object with a 'data' list "
                         "of articles).")
    version = str(doc.get("version", "1.1"))
    examples = []

    lines = _Lines(text)

    def bad(where: str, msg: str, needle: str | None = None):
        line = lines.of(needle) if needle else None
        return InputError(f"{path}{f', line {line}' if line else ''}, field {where}: {msg}")

    def objects(value, where: str):
        """(index, where, item) of a list of JSON objects, or a clear error."""
        if not isinstance(value, list):
            raise bad(where, "missing or not a list.")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad(f"{where}[{i}]", "not an object.")
            yield i, f"{where}[{i}]", item

    for a, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        for p, where_p, para in objects(paragraphs, f"data[{a}].paragraphs"):
            context = para.get("context")
            for q, where, item in objects(para.get("qas"), f"{where_p}.qas"):
                qid = str(item.get("id", f"{a}-{p}-{q}"))
                needle = json.dumps(qid) if "id" in item else None
                if not isinstance(context, str) or not context.strip():
                    raise bad(f"{where_p}.context", f"question {qid!r} has no context to answer from.", needle)
                question = item.get("question")
                if not isinstance(question, str) or not question.strip():
                    raise bad(f"{where}.question", "missing or empty.", needle)
                answers = item.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(x, dict) and isinstance(x.get("text"), str)
                                                            for x in answers):
                    raise bad(f"{where}.answers", 'must be a list of {"text": ..., "answer_start": ...}.', needle)
                impossible = bool(item.get("is_impossible", False))
                golds = () if impossible else tuple(x["text"] for x in answers)
                if not impossible and not any(g.strip() for g in golds):
                    raise bad(f"{where}.answers", "no gold answer text, and the question is not marked "
                              "is_impossible, so it cannot be scored.", needle)
                line = lines.of(needle) if needle else None
                examples.append(QAExample(qid, question, context, golds,
                                          where + (f" (line {line})" if line else "")))
    return SquadData(path, tuple(examples), version)


def load_data(path: Path, *, format: DataFormat = "auto", text_column: str | None = None,
              pair_column: str | None = None, label_column: str | None = None) -> ClassificationData | SquadData:
    """Read a labelled file; the format comes from the extension (or the content) unless given."""
    path = Path(path)
    text = _read_text(path)
    if format == "auto":
        suffix = path.suffix.lower()
        if suffix in (".tsv", ".tab"):
            format = "tsv"
        elif suffix == ".csv":
            format = "csv"
        elif suffix in (".jsonl", ".ndjson"):
            format = "jsonl"
        elif suffix == ".json":
            format = "squad"
        else:
            head = text.lstrip()
            first = text.split("\n", 1)[0]
            format = ("squad" if head.startswith("{") and '"paragraphs"' in text[:1_000_000] else
                      "jsonl" if head.startswith("{") else "tsv" if "\t" in first else "csv")
    if format == "squad":
        return load_squad(path, text)
    if format == "jsonl":
        return _load_jsonl(path, text, text_column, pair_column, label_column)
    return _load_delimited(path, text, "\t" if format == "tsv" else ",", text_column, pair_column, label_column)


# --- metrics -------------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:  # SQuAD 2.0: no-answer is right only against no-answer
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_scores(prediction: str, golds: tuple[str, ...]) -> tuple[float, float]:
    """(exact match, F1) against the best gold answer; an unanswerable question's gold is ''."""
    golds = golds or ("",)
    return max(squad_em(prediction, g) for g in golds), max(squad_f1(prediction, g) for g in golds)


def classification_metrics(gold: list[int], pred: list[int]) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels that occur in gold or predictions (as scikit-learn does)."""
    if len(gold) != len(pred) or not gold:
        raise ValueError("gold and pred must be non-empty and of equal length")
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    f1s = []
    for label in sorted(set(gold) | set(pred)):
        tp = sum(g == p == label for g, p in zip(gold, pred))
        fp = sum(p == label and g != label for g, p in zip(gold, pred))
        fn = sum(g == label and p != label for g, p in zip(gold, pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


def resolve_label(raw: str, labels: tuple[str, ...], where: str) -> tuple[int, str]:
    """A label from a file → (index, how): exact name, then integer id, then name ignoring case."""
    if raw in labels:
        return labels.index(raw), "name"
    if re.fullmatch(r"[+-]?\d+", raw):
        idx = int(raw)
        if 0 <= idx < len(labels):
            return idx, "id"
    folded = [label.lower() for label in labels]
    if raw.lower() in folded:
        return folded.index(raw.lower()), "name"
    raise InputError(f"{where}: label {raw!r} is not one of the model's labels ({', '.join(labels)}) nor an id "
                     f"0..{len(labels) - 1}. Check that the file matches this model.")


# --- evaluation ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEval:
    metrics: dict[str, float]  # accuracy + macro_f1, or exact_match + f1 (0..100 for SQuAD, as its script)
    mean_latency_ms: float  # model time per example
    seconds: float  # wall time of everything this model did, tokenization included

    def to_dict(self) -> dict:
        return {"metrics": {k: round(v, 6) for k, v in self.metrics.items()},
                "mean_latency_ms": round(self.mean_latency_ms, 3), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Disagreement:
    where: str  # "line 12" or the SQuAD path
    input: str  # the text (and pair), or the question
    gold: tuple[str, ...]
    fp32: str  # label or answer text
    int8: str
    fp32_score: float
    int8_score: float
    context: str = ""  # question answering: the paragraph, so Try it can open the example again

    def to_dict(self) -> dict:
        return {"where": self.where, "input": self.input, "gold": list(self.gold), "fp32": self.fp32,
                "int8": self.int8, "fp32_score": self.fp32_score, "int8_score": self.int8_score,
                **({"context": self.context} if self.context else {})}


@dataclass(frozen=True)
class EvalResult:
    task: str
    data_path: Path
    examples: int
    fp32: ModelEval
    int8: ModelEval
    agreement: float  # share of examples where both give the same label / answer text
    disagreements: tuple[Disagreement, ...]  # the first MAX_DISAGREEMENTS of them
    n_disagreements: int
    labels_matched_by: str | None = None  # classification: "name", "id" or "name and id"
    details: dict = field(default_factory=dict)

    def delta(self, metric: str) -> float:
        """INT8 minus FP32 on a metric."""
        return self.int8.metrics[metric] - self.fp32.metrics[metric]

    def to_dict(self) -> dict:
        return {"task": self.task, "data": str(self.data_path), "examples": self.examples,
                "fp32": self.fp32.to_dict(), "int8": self.int8.to_dict(), "agreement": round(self.agreement, 6),
                "delta": {k: round(self.delta(k), 6) for k in self.fp32.metrics},
                "n_disagreements": self.n_disagreements,
                "disagreements": [d.to_dict() for d in self.disagreements],
                "labels_matched_by": self.labels_matched_by, **self.details}


def _check_runners(fp32, int8, data) -> None:
    for name, runner in (("FP32", fp32), ("INT8", int8)):
        if runner.spec.task != data.task:
            raise InputError(f"{data.path} is {data.task} data, but the {name} model is a {runner.spec.task} "
                             "model. Pick a data file for this model's task.")
    if fp32.spec.labels != int8.spec.labels:
        raise InputError(f"The FP32 and INT8 models have different labels ({fp32.spec.labels} vs "
                         f"{int8.spec.labels}); they must be two versions of the same model.")


def evaluate(fp32_runner, int8_runner, data, *, limit: int | None = None, progress: ProgressFn | None = None,
             cancel: threading.Event | None = None) -> EvalResult:
    """Run both models over `data` (the first `limit` examples) and compare them with the gold labels and each
    other, as the data's task measures it. Every label is checked before any model runs."""
    from app.core.tasks import get_task

    if limit is not None and limit < 1:
        raise ValueError(f"limit: must be at least 1 (got {limit})")
    _check_runners(fp32_runner, int8_runner, data)
    return get_task(data.task).evaluate(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


def evaluate_classification(fp32, int8, data: ClassificationData, *, limit=None, progress=None, cancel=None,
                            batch_size: int = 1) -> EvalResult:
    """Accuracy and macro-F1 of both models; agreement = the same top label."""
    examples = data.examples[:limit] if limit else data.examples
    labels = fp32.spec.labels
    resolved = [resolve_label(e.label, labels, f"{data.path}, {e.where}, field {data.label_column!r}")
                for e in examples]
    gold = [i for i, _ in resolved]
    how = sorted({h for _, h in resolved})
    total = len(examples)
    preds = {"fp32": [], "int8": []}
    latency = {"fp32": 0.0, "int8": 0.0}
    wall = {"fp32": 0.0, "int8": 0.0}
    results = {"fp32": [], "int8": []}
    correct = {"fp32": 0, "int8": 0}
    report(progress, "eval", 0, total, f"{total} examples")
    for lo in range(0, total, batch_size):
        check_cancel(cancel)
        chunk = examples[lo: lo + batch_size]
        texts = [e.text for e in chunk]
        pairs = [e.text_pair or "" for e in chunk] if data.pair_column else None
        for name, runner in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            out = runner.classify(texts, pairs, top_k=1, batch_size=batch_size)
            wall[name] += time.perf_counter() - start
            latency[name] += sum(r.latency_ms for r in out)
            results[name] += out
            preds[name] += [r.scores[0].index for r in out]
            correct[name] += sum(g == r.scores[0].index for g, r in zip(gold[lo:], out))
        done = lo + len(chunk)
        report(progress, "eval", done, total,
               f"accuracy fp32 {correct['fp32'] / done:.3f} · int8 {correct['int8'] / done:.3f}")
    disagreements = []
    for i, (a, b) in enumerate(zip(results["fp32"], results["int8"])):
        if a.scores[0].index != b.scores[0].index:
            e = examples[i]
            disagreements.append(Disagreement(
                where=e.where, input=e.text if e.text_pair is None else f"{e.text} ||| {e.text_pair}",
                gold=(labels[gold[i]],), fp32=a.label, int8=b.label, fp32_score=a.score, int8_score=b.score))
    models = {name: ModelEval(classification_metrics(gold, preds[name]), latency[name] / total, wall[name])
              for name in ("fp32", "int8")}
    return EvalResult(task=data.task, data_path=data.path, examples=total, fp32=models["fp32"], int8=models["int8"],
                      agreement=1 - len(disagreements) / total, disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]),
                      n_disagreements=len(disagreements), labels_matched_by=" and ".join(how))


def evaluate_qa(fp32, int8, data: SquadData, *, limit=None, progress=None, cancel=None) -> EvalResult:
    """SQuAD exact match and F1 of both models; agreement = the same best answer text."""
    examples = data.examples[:limit] if limit else data.examples
    total = len(examples)
    impossible = data.has_impossible
    sums = {"fp32": [0.0, 0.0], "int8": [0.0, 0.0]}
    latency = {"fp32": 0.0, "int8": 0.0}
    wall = {"fp32": 0.0, "int8": 0.0}
    disagreements = []
    report(progress, "eval", 0, total, f"{total} questions")
    for n, e in enumerate(examples, start=1):
        check_cancel(cancel)
        answers = {}
        for name, runner in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            try:
                best = runner.answer(e.question, e.context, handle_impossible_answer=impossible)
            except InputError as err:
                raise InputError(f"{data.path}, {e.where}, id {e.id}: {err}") from err
            wall[name] += time.perf_counter() - start
            answer = best[0] if best else None
            answers[name] = answer
            text = answer.text if answer else ""
            latency[name] += answer.latency_ms if answer else 0.0
            em, f1 = squad_scores(text, e.answers)
            sums[name][0] += em
            sums[name][1] += f1
        a, b = answers["fp32"], answers["int8"]
        if (a.text if a else "").strip() != (b.text if b else "").strip():
            disagreements.append(Disagreement(where=f"{e.where} id {e.id}", input=e.question, gold=e.answers,
                                              fp32=a.text if a else "", int8=b.text if b else "",
                                              fp32_score=a.score if a else 0.0, int8_score=b.score if b else 0.0,
                                              context=e.context))
        if n == total or n % 10 == 0:
            report(progress, "eval", n, total, f"F1 fp32 {100 * sums['fp32'][1] / n:.1f} · "
                                               f"int8 {100 * sums['int8'][1] / n:.1f}")
    models = {name: ModelEval({"exact_match": 100 * sums[name][0] / total, "f1": 100 * sums[name][1] / total},
                              latency[name] / total, wall[name]) for name in ("fp32", "int8")}
    return EvalResult(task=data.task, data_path=data.path, examples=total, fp32=models["fp32"], int8=models["int8"],
                      agreement=1 - len(disagreements) / total, disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]),
                      n_disagreements=len(disagreements), details={"squad_version": data.version,
                                                                   "handle_impossible_answer": impossible})
