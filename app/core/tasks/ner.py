"""Token classification (NER), following transformers' token-classification pipeline step for step, so
entities, words, scores and character spans match it; plus the guard's entity-level agreement and the
evaluation on CoNLL / JSONL files.

  text ──tokenizer(longest_first, model max length, stride, overflow)──▶ windows (one model call each)
  per window: softmax per token; special tokens dropped; `is_subword` per token (WordPiece: "##" makes the
              token longer than its text; other tokenizers: no space before it);
              none/simple: argmax label per token   first/average/max: one label per word
              simple/first/average/max: B-/I- grouping (B- starts, I- of the same type continues), score =
              mean of the group, word = decoded tokens; groups labelled O (ignore_labels) dropped
  all windows: overlapping entities → the longer one (the higher score when as long), as the pipeline does

Unlike the pipeline, a text longer than the model is never cut: without `stride` it is read in windows that
overlap by `default_stride` tokens (the pipeline would truncate it), and "none" works over windows too
(tokens numbered across the whole text, each kept once). Evaluation tags each word of a sentence with the
label of its first sub-token (`word_tags`) and scores entities as conlleval / seqeval do.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Encoding
from tokenizers.models import Unigram

from app.core.errors import InputError, UnsupportedModelError
from app.core.export.families.base import BATCH, SEQ
from app.core.progress import ProgressFn, check_cancel, report
from app.core.tasks.base import PredictRequest, Task, cosine, softmax
from app.core.tasks.tokenizer import TextTokenizer, arrays_from

Aggregation = Literal["none", "simple", "first", "average", "max"]
AGGREGATIONS = ("none", "simple", "first", "average", "max")
_WORD_LEVEL = ("first", "average", "max")
_BIO = re.compile(r"O|[BI]-\S+")


@dataclass(frozen=True)
class Entity:
    label: str  # entity_group (aggregated, "PER") or entity (none, "B-PER")
    score: float
    word: str  # decoded tokens, as the pipeline's "word"; text[start:end] is the exact text
    start: int  # character offsets in the text
    end: int
    index: int | None = None  # token index (across all windows), only for aggregation "none"

    def to_dict(self) -> dict:
        if self.index is None:
            return {"entity_group": self.label, "score": self.score, "word": self.word, "start": self.start,
                    "end": self.end}
        return {"entity": self.label, "score": self.score, "index": self.index, "word": self.word,
                "start": self.start, "end": self.end}


class Entities(list):
    """The entities of one text (a plain list of `Entity`), plus `latency_ms`: the model time of all its
    windows together."""

    def __init__(self, items=(), latency_ms: float = 0.0):
        super().__init__(items)
        self.latency_ms = latency_ms


# --- pre-processing ------------------------------------------------------------------------------------------

def default_stride(max_length: int) -> int:
    """Overlap between windows when none is given: a quarter of the window, at most 128 tokens."""
    return min(max_length // 4, 128)


def _stride(tokenizer: TextTokenizer, stride: int | None, max_length: int | None) -> tuple[int, int]:
    max_length = tokenizer.max_length if max_length is None else min(max_length, tokenizer.max_length)
    stride = default_stride(max_length) if stride is None else stride
    room = max_length - tokenizer.tokenizer.num_special_tokens_to_add(False)
    if not 0 <= stride < room:
        raise InputError(f"stride ({stride}) must be at least 0 and smaller than the {room} text tokens a window "
                         f"of {max_length} holds. Give a smaller stride.")
    return stride, max_length


def windows(tokenizer: TextTokenizer, text: str, *, stride: int | None = None,
            max_length: int | None = None) -> list[Encoding]:
    """The text as one or more windows of the model's maximum length (or `max_length`), each overlapping the
    previous by `stride` tokens (None: `default_stride`)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("The text is empty. Type the text to find entities in.")
    stride, max_length = _stride(tokenizer, stride, max_length)
    first = tokenizer.encode([text], truncation="longest_first", max_length=max_length, stride=stride)[0]
    return [first, *first.overflowing]


def _logits(runner, window: Encoding) -> tuple[np.ndarray, float]:
    """One window through the model: (seq, labels) float32 logits and the ms of the call."""
    outputs, ms = runner.run(arrays_from([window], runner.tokenizer.pad_token_id).feeds(runner.input_names))
    return np.asarray(outputs["logits"][0], dtype=np.float32), ms  # (seq, labels)


# --- post-processing (the pipeline's gather_pre_entities, aggregate, group_entities) -------------------------

@functools.lru_cache(maxsize=16)
def _unk_id(tokenizer: TextTokenizer) -> int | None:
    """transformers' unk_token_id: the model's unk token (Unigram: its unk_id), else the usual unk strings."""
    tok = tokenizer.tokenizer
    if isinstance(tok.model, Unigram):
        return json.loads(tok.model.__getstate__()).get("unk_id")
    for name in (getattr(tok.model, "unk_token", None), "[UNK]", "<unk>"):
        if name and tok.token_to_id(name) is not None:
            return tok.token_to_id(name)
    return None


def _decode(tokenizer: TextTokenizer, tokens: list[str]) -> str:
    decoder = tokenizer.tokenizer.decoder  # the pipeline's convert_tokens_to_string
    return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _bi_tag(label: str) -> tuple[str, str]:
    """The pipeline's get_tag: ("B" | "I", type); an unprefixed label continues ("I") its own type."""
    if label.startswith("B-") or label.startswith("I-"):
        return label[0], label[2:]
    return "I", label


def _groups(labels: list[str]) -> list[tuple[int, int]]:
    """group_entities: (first, last) positions of runs where each next label has the same type and no B-."""
    runs: list[tuple[int, int]] = []
    for i, label in enumerate(labels):
        bi, tag = _bi_tag(label)
        if runs and bi != "B" and tag == _bi_tag(labels[runs[-1][1]])[1]:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _gather(window: Encoding, scores: np.ndarray, text: str, tokenizer: TextTokenizer, first_index: int) -> list[dict]:
    """gather_pre_entities: one dict per non-special token, with its scores, text span and `is_subword`."""
    word_aware = bool(getattr(tokenizer.tokenizer.model, "continuing_subword_prefix", None))
    unk = _unk_id(tokenizer)
    pre = []
    for idx, (token, tid, (start, end)) in enumerate(zip(window.tokens, window.ids, window.offsets)):
        if window.special_tokens_mask[idx]:
            continue
        word_ref = text[start:end]
        if word_aware:
            is_subword = len(token) != len(word_ref)
        else:  # the pipeline's fallback heuristic for BPE / Unigram tokenizers
            is_subword = start > 0 and " " not in text[start - 1: start + 1]
        if tid == unk:
            token, is_subword = word_ref, False
        pre.append({"word": token, "scores": scores[idx], "start": start, "end": end, "index": first_index + idx,
                    "is_subword": is_subword})
    return pre


def _aggregate_word(group: list[dict], strategy: str, labels: tuple[str, ...], tokenizer: TextTokenizer) -> dict:
    if strategy == "first":
        scores = group[0]["scores"]
    elif strategy == "max":
        scores = max(group, key=lambda e: e["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)  # (labels,)
    idx = int(scores.argmax())
    return {"entity": labels[idx], "score": float(scores[idx]), "word": _decode(tokenizer, [e["word"] for e in group]),
            "start": group[0]["start"], "end": group[-1]["end"]}


def _aggregate(pre: list[dict], strategy: str, labels: tuple[str, ...], tokenizer: TextTokenizer) -> list[Entity]:
    if strategy in ("none", "simple"):
        tokens = [{"entity": labels[int(p["scores"].argmax())], "score": float(p["scores"].max()), **p} for p in pre]
    else:  # aggregate_words: a word = a token and the subword tokens after it
        words: list[list[dict]] = []
        for p in pre:
            if words and p["is_subword"]:
                words[-1].append(p)
            else:
                words.append([p])
        tokens = [_aggregate_word(w, strategy, labels, tokenizer) for w in words]
    if strategy == "none":
        return [Entity(t["entity"], t["score"], t["word"], t["start"], t["end"], t["index"]) for t in tokens]
    return [Entity(tokens[a]["entity"].split("-", 1)[-1], float(np.nanmean([t["score"] for t in tokens[a:b + 1]])),
                   _decode(tokenizer, [t["word"] for t in tokens[a:b + 1]]), tokens[a]["start"], tokens[b]["end"])
            for a, b in _groups([t["entity"] for t in tokens])]


def _overlapping(found: list[Entity]) -> list[Entity]:
    """aggregate_overlapping_entities: of entities that overlap, the longer one (the higher score if as long)."""
    if not found:
        return found
    found = sorted(found, key=lambda e: e.start)
    kept, previous = [], found[0]
    for e in found:
        if previous.start <= e.start < previous.end:
            longer = e.end - e.start > previous.end - previous.start
            if longer or (e.end - e.start == previous.end - previous.start and e.score > previous.score):
                previous = e
        else:
            kept.append(previous)
            previous = e
    kept.append(previous)
    return kept


def _check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise InputError(f"Unknown aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}.")
    return aggregation


def postprocess(encodings: list[Encoding], logits: np.ndarray, text: str, labels: tuple[str, ...], *,
                tokenizer: TextTokenizer, aggregation: Aggregation = "simple", ignore_labels: tuple[str, ...] = ("O",),
                stride: int = 0, latency_ms: float = 0.0) -> Entities:
    """Windows of `text` and their (windows, seq, labels) logits (padding allowed past each window's length)
    → entities. `stride` is the overlap the windows were made with; it numbers tokens across windows."""
    strategy = _check_aggregation(aggregation)
    found: list[Entity] = []
    first_index = 0
    for k, window in enumerate(encodings):
        n = len(window.ids)
        if strategy in _WORD_LEVEL and any(w is None and not s for w, s in zip(window.word_ids,
                                                                                 window.special_tokens_mask)):
            raise UnsupportedModelError(f"Aggregation {strategy!r} needs a tokenizer that knows words; this one "
                                        "gives tokens without word ids. Use aggregation 'simple'.")
        scores = softmax(np.asarray(logits[k, :n], dtype=np.float32))  # (seq, labels)
        grouped = _aggregate(_gather(window, scores, text, tokenizer, first_index), strategy, labels, tokenizer)
        found += [e for e in grouped if e.label not in ignore_labels]
        first_index += n - sum(window.special_tokens_mask) - stride  # the next window starts `stride` back
    if len(encodings) > 1:
        if strategy == "none":  # a token in the overlap of two windows: once, with the higher score
            best: dict[int, Entity] = {}
            for e in found:
                if e.index not in best or e.score > best[e.index].score:
                    best[e.index] = e
            found = sorted(best.values(), key=lambda e: e.index)
        else:
            found = _overlapping(found)
    return Entities(found, latency_ms=latency_ms)


def entities(runner, texts: list[str] | str, *, aggregation: Aggregation = "simple",
             stride: int | None = None) -> list[Entities]:
    """The entities of each text, one window per model call (dynamic INT8 takes one activation range per call,
    so batching windows would make a window's INT8 answer depend on the others). Each result's `latency_ms`
    is the model time of that text."""
    _check_aggregation(aggregation)
    if runner.spec.task != "token-classification":
        raise InputError(f"{runner.folder.name} is a {runner.spec.task} model ({runner.spec.architecture}), not "
                         "token classification. Pick a token-classification (NER) model.")
    texts = [texts] if isinstance(texts, str) else list(texts)
    used, _ = _stride(runner.tokenizer, stride, None)
    results = []
    for text in texts:
        parts = windows(runner.tokenizer, text, stride=used)
        logits = np.zeros((len(parts), max(len(w.ids) for w in parts), len(runner.spec.labels)),
                          np.float32)  # (windows, seq, labels)
        total_ms = 0.0
        for k, window in enumerate(parts):
            out, ms = _logits(runner, window)
            logits[k, : len(out)] = out
            total_ms += ms
        results.append(postprocess(parts, logits, text, runner.spec.labels, tokenizer=runner.tokenizer,
                                   aggregation=aggregation, stride=used, latency_ms=total_ms))
    return results


# --- the accuracy guard: entity-level agreement --------------------------------------------------------------

def token_spans(label_ids: np.ndarray, labels: tuple[str, ...], mask: np.ndarray) -> frozenset[tuple[int, int, str]]:
    """Entities of one sequence as the "simple" strategy groups its argmax labels: (first token, last token,
    type). Tokens where `mask` is False are left out; groups of type O are not entities."""
    positions = np.flatnonzero(mask)  # (real tokens,)
    names = [labels[int(label_ids[i])] for i in positions]
    spans = ((int(positions[a]), int(positions[b]), names[a].split("-", 1)[-1]) for a, b in _groups(names))
    return frozenset(s for s in spans if s[2] != "O")


def guard_agreement(reference: list[dict], outputs: list[dict], feeds: list[dict], labels: tuple[str, ...], *,
                    tolerance: float = 0.0) -> tuple[list[bool], list[float]]:
    """Per example row: are the FP32 and INT8 entity sets identical, and the mean per-token cosine of their
    softmax scores over real tokens. The first and last real tokens (CLS/<s> and SEP/</s> in every family)
    are no part of any entity.

    With `tolerance`, entities that differ still count as the same when at every token whose label changed,
    FP32 itself gives INT8's label a probability within `tolerance` of its own best (a near-tie: FP32 was as
    unsure, e.g. 0.342 I-MISC against 0.334 I-ORG)."""
    same, cos = [], []
    for ref, out, feed in zip(reference, outputs, feeds):
        masks = np.asarray(feed["attention_mask"]).astype(bool)  # (rows, seq)
        for a, b, mask in zip(ref["logits"], out["logits"], masks):
            a, b = a[: len(mask)], b[: len(mask)]  # (seq, labels)
            inner = mask.copy()
            real = np.flatnonzero(mask)
            inner[real[[0, -1]] if len(real) else []] = False
            fp32_ids, int8_ids = a.argmax(-1), b.argmax(-1)  # (seq,)
            agree = token_spans(fp32_ids, labels, inner) == token_spans(int8_ids, labels, inner)
            if not agree and tolerance:
                changed = np.flatnonzero(inner & (fp32_ids != int8_ids))
                p = softmax(a[changed])  # (changed, labels)
                agree = bool((p.max(-1) - p[np.arange(len(changed)), int8_ids[changed]] <= tolerance).all())
            same.append(agree)
            per_token = cosine(softmax(a[mask]), softmax(b[mask]))  # (tokens,)
            cos.append(float(per_token.mean()) if len(per_token) else 1.0)
    return same, cos


# --- labelled data -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NerSentence:
    words: tuple[str, ...]
    tags: tuple[str | int, ...]  # an int is a label id (JSONL), until NerData.with_labels names it
    line: int  # 1-based line of the first word


@dataclass(frozen=True)
class NerData:
    path: Path
    sentences: tuple[NerSentence, ...]
    task: str = "token-classification"
    format: Literal["conll", "jsonl"] = "conll"

    def __post_init__(self):
        if not self.sentences:
            raise InputError(f"{self.path}: no sentences (expected `word TAG` lines, or JSONL with \"tokens\" and "
                             "\"ner_tags\").")

    def where(self, sentence: NerSentence, k: int) -> str:
        """Where word k of a sentence is in the file."""
        if self.format == "jsonl":
            return f"{self.path}, line {sentence.line}, token {k + 1}"
        return f"{self.path}, line {sentence.line + k}"

    def with_labels(self, labels: tuple[str, ...]) -> NerData:
        """The data with every tag a model label (ids named); an unknown tag is an InputError at its line."""
        known = ", ".join(labels)
        sentences = []
        for s in self.sentences:
            tags = []
            for k, tag in enumerate(s.tags):
                if isinstance(tag, int):
                    if not 0 <= tag < len(labels):
                        raise InputError(f"{self.where(s, k)}: tag id {tag} is not one of the model's "
                                         f"0..{len(labels) - 1} ({known}). Check that the file matches this model.")
                    tag = labels[tag]
                elif tag not in labels:
                    raise InputError(f"{self.where(s, k)}: unknown tag {tag!r}; the model's labels are {known}. "
                                     "Check that the file matches this model.")
                tags.append(tag)
            sentences.append(NerSentence(s.words, tuple(tags), s.line))
        return NerData(self.path, tuple(sentences), self.task, self.format)


def _check_tag(tag, where: str):
    if isinstance(tag, bool) or not isinstance(tag, (str, int)) or (isinstance(tag, str) and not _BIO.fullmatch(tag)):
        raise InputError(f"{where}: tag {tag!r} is not O, B-TYPE or I-TYPE (nor an integer label id). "
                         "Write the tags in the BIO scheme.")
    return tag


def _load_columns(path: Path, text: str) -> list[NerSentence]:
    sentences, words, tags, first = [], [], [], 0

    def close():
        if words:
            sentences.append(NerSentence(tuple(words), tuple(tags), first))
        words.clear()
        tags.clear()

    for n, raw in enumerate(text.splitlines(), start=1):
        columns = raw.split()
        if not columns or columns[0] == "-DOCSTART-":
            close()
            continue
        if len(columns) == 1:
            raise InputError(f"{path}, line {n}: one column ({columns[0]!r}); each line needs a word and its tag "
                             "(the last column), separated by a space or tab.")
        if not words:
            first = n
        words.append(columns[0])
        tags.append(_check_tag(columns[-1], f"{path}, line {n}"))
    close()
    return sentences


def _load_jsonl(path: Path, text: str) -> list[NerSentence]:
    from app.core.eval import json_lines

    example = '{"tokens": ["John", "lives"], "ner_tags": ["B-PER", "O"]}'
    sentences = []
    for n, obj in json_lines(path, text, example):
        words, tags = obj.get("tokens"), obj.get("ner_tags")
        if not isinstance(words, list) or not isinstance(tags, list) or not all(isinstance(w, str) for w in words):
            raise InputError(f"{path}, line {n}: each line must be a JSON object like {example}.")
        if len(words) != len(tags):
            raise InputError(f"{path}, line {n}: {len(words)} tokens but {len(tags)} ner_tags; give one tag a token.")
        if not words or words[0] == "-DOCSTART-":
            continue
        sentences.append(NerSentence(tuple(words), tuple(_check_tag(t, f"{path}, line {n}, token {k + 1}")
                                                         for k, t in enumerate(tags)), n))
    return sentences


def load_conll(path: Path | str, text: str | None = None, *, labels: tuple[str, ...] | None = None) -> NerData:
    """CoNLL columns (`word ... TAG` a line, the tag last; a blank line between sentences; -DOCSTART- skipped)
    or JSONL (`{"tokens": [...], "ner_tags": [...]}`, tags as names or label ids). With `labels`, every tag is
    also checked against (and ids named by) the model's labels."""
    path = Path(path)
    if text is None:
        from app.core.eval import _read_text

        text = _read_text(path)
    if not text.strip():
        raise InputError(f"{path}: the file is empty. Give a CoNLL file (`word TAG` lines) or JSONL.")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{")
    data = NerData(path, tuple(_load_jsonl(path, text) if jsonl else _load_columns(path, text)),
                   format="jsonl" if jsonl else "conll")
    return data.with_labels(labels) if labels is not None else data


# --- metrics -------------------------------------------------------------------------------------------------

def entity_spans(tags) -> set[tuple[int, int, str]]:
    """(first word, last word, type) of each entity, as conlleval and seqeval's default mode read IOB1/IOB2:
    B- starts an entity, I- continues one of its type and starts one after O or another type. An unprefixed
    tag other than O counts as I- of its own type."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        bi, tag_type = ("O", "") if tag == "O" else _bi_tag(tag)
        if start is not None and (bi != "I" or tag_type != kind):
            spans.add((start, i - 1, kind))
            start = None
        if bi == "B" or (bi == "I" and start is None):
            start, kind = i, tag_type
    return spans


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return 100 * p, 100 * r, (200 * p * r / (p + r) if p + r else 0.0)


def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Micro precision, recall and F1 (0..100) over exact entity spans and types, and F1 per type."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred must have as many sentences ({len(gold)} vs {len(pred)})")
    g = {(i, *s) for i, tags in enumerate(gold) for s in entity_spans(tags)}
    p = {(i, *s) for i, tags in enumerate(pred) for s in entity_spans(tags)}
    precision, recall, f1 = _prf(len(g & p), len(p), len(g))
    per_type = {}
    for kind in sorted({s[3] for s in g | p}):
        gk, pk = {s for s in g if s[3] == kind}, {s for s in p if s[3] == kind}
        per_type[kind] = _prf(len(gk & pk), len(pk), len(gk))[2]
    return {"precision": precision, "recall": recall, "f1": f1, "per_type_f1": per_type}


# --- evaluation ----------------------------------------------------------------------------------------------

def word_tags(runner, words: tuple[str, ...] | list[str], *,
              stride: int | None = None) -> tuple[list[str], list[float], float]:
    """(tag per word, its score, model ms): the label of each word's FIRST sub-token, the words joined by
    single spaces into the text. A sentence longer than the model is read in strided windows; a word keeps the
    prediction of the window where its first sub-token is most central (the first such window on a tie). A
    word that gives no token at all (nothing left after normalisation) is tagged O with score 0."""
    text = " ".join(words)
    starts, ends, pos = [], [], 0
    for w in words:
        starts.append(pos)
        ends.append(pos + len(w))
        pos += len(w) + 1
    labels = runner.spec.labels
    best: list[tuple[int, int, float] | None] = [None] * len(words)  # (centrality, label id, score)
    total_ms = 0.0
    for k, window in enumerate(windows(runner.tokenizer, text, stride=stride)):
        logits, ms = _logits(runner, window)
        total_ms += ms
        scores = softmax(logits)  # (seq, labels)
        content = [i for i, s in enumerate(window.special_tokens_mask) if not s]
        seen = set()
        for i in content:
            a = window.offsets[i][0]
            w = bisect.bisect_right(starts, a) - 1
            if w < 0 or a >= ends[w] or w in seen:
                continue
            seen.add(w)
            # a window may start inside a word: that token is its first sub-token only if it starts the word
            centrality = min(i - content[0], content[-1] - i) if (k == 0 or i > content[0] or a == starts[w]) else -1
            if best[w] is None or centrality > best[w][0]:
                best[w] = (centrality, int(scores[i].argmax()), float(scores[i].max()))
    tags = [labels[b[1]] if b else "O" for b in best]
    return tags, [b[2] if b else 0.0 for b in best], total_ms


def _entity_strings(words, tags) -> tuple[str, ...]:
    return tuple(f"{t}: {' '.join(words[a:b + 1])}" for a, b, t in sorted(entity_spans(tags)))


def evaluate_ner(fp32_runner, int8_runner, data: NerData, *, limit: int | None = None,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None):
    """Both models over `data` (the first `limit` sentences): entity precision, recall and F1 against the gold
    tags (per-type F1 in details), and the share of sentences whose FP32 and INT8 entities are identical.
    Every tag of the file is checked against the model's labels before any model runs."""
    from app.core.eval import MAX_DISAGREEMENTS, Disagreement, EvalResult, ModelEval, _check_runners

    if limit is not None and limit < 1:
        raise ValueError(f"limit: must be at least 1 (got {limit})")
    _check_runners(fp32_runner, int8_runner, data)
    data = data.with_labels(fp32_runner.spec.labels)
    sentences = data.sentences[:limit] if limit else data.sentences
    total = len(sentences)
    preds: dict[str, list[list[str]]] = {"fp32": [], "int8": []}
    latency, wall = {"fp32": 0.0, "int8": 0.0}, {"fp32": 0.0, "int8": 0.0}
    disagreements = []
    report(progress, "eval", 0, total, f"{total} sentences")
    for n, s in enumerate(sentences, start=1):
        check_cancel(cancel)
        scores = {}
        for name, runner in (("fp32", fp32_runner), ("int8", int8_runner)):
            start = time.perf_counter()
            tags, word_scores, ms = word_tags(runner, s.words)
            wall[name] += time.perf_counter() - start
            latency[name] += ms
            preds[name].append(tags)
            scores[name] = float(np.mean(word_scores))
        a, b = preds["fp32"][-1], preds["int8"][-1]
        if entity_spans(a) != entity_spans(b):
            disagreements.append(Disagreement(
                where=f"line {s.line}", input=" ".join(s.words), gold=_entity_strings(s.words, s.tags),
                fp32="; ".join(_entity_strings(s.words, a)) or "(none)",
                int8="; ".join(_entity_strings(s.words, b)) or "(none)",
                fp32_score=scores["fp32"], int8_score=scores["int8"]))
        if n == total or n % 20 == 0:
            report(progress, "eval", n, total, f"{n} of {total} sentences, {len(disagreements)} differ")
    gold = [list(s.tags) for s in sentences]
    metrics = {name: entity_metrics(gold, preds[name]) for name in preds}
    models = {name: ModelEval({k: m[k] for k in ("precision", "recall", "f1")}, latency[name] / total, wall[name])
              for name, m in metrics.items()}
    return EvalResult(task=data.task, data_path=data.path, examples=total, fp32=models["fp32"], int8=models["int8"],
                      agreement=1 - len(disagreements) / total, disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]),
                      n_disagreements=len(disagreements),
                      details={"per_type_f1": {name: m["per_type_f1"] for name, m in metrics.items()},
                               "gold_entities": sum(len(entity_spans(t)) for t in gold)})


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
    data_formats = "CoNLL or JSONL entities (*.txt *.conll *.iob *.jsonl)"
    agreement_words = "same entities"

    def build_head(self, builder, x: str) -> None:
        #  x ─ Linear(classifier) ─► logits [B, S, labels]
        labels = len(builder.spec.labels)
        logits = builder.linear(x, "classifier", builder.spec.hidden_size, labels, "/classifier")
        builder.g.output(logits, "logits", [BATCH, SEQ, labels])

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import NEWS, QA_EXAMPLES, SENTENCES
        from app.core.eval import read_lines

        if path is None:  # everyday, encyclopedic and news sentences, full of people, places and organisations
            texts = [*SENTENCES, *(s.strip() + "." for context, _ in QA_EXAMPLES for s in context.split(". ") if s),
                     *NEWS]
            return texts, f"built-in, {len(texts)} sentences"
        if Path(path).suffix == ".txt":
            texts = read_lines(path)
            return texts, f"{Path(path).name}, {len(texts)} texts"
        data = load_conll(path)
        return [" ".join(s.words) for s in data.sentences], f"{Path(path).name}, {len(data.sentences)} sentences"

    def agreement(self, spec, reference, outputs, feeds):
        # A changed label that FP32 scores within 0.05 of its own best is a near-tie, not a changed answer.
        return guard_agreement(reference, outputs, feeds, spec.labels, tolerance=0.05)

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
            rows.append(("latency", f"{a.latency_ms:.1f} ms", f"{b.latency_ms:.1f} ms"))
        return rows

    def load_data(self, path: Path, **options):
        return load_conll(path)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        return evaluate_ner(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = TokenClassificationTask()
