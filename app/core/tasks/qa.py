"""Extractive question answering: the task plug-in (span head, calibration, span agreement, predict, SQuAD eval)
and its pre/post-processing, following transformers' question-answering pipeline
(v4.4x, the last one that shipped it) step for step, so answers and spans match it exactly.

  question + context ──tokenizer(only_second, max_seq_len, stride, overflow)──▶ windows
  per window: p_mask (1 = not context; CLS kept), logits of masked tokens → -10000, softmax over the window,
              null score = p(start=CLS)·p(end=CLS), CLS zeroed, spans (s ≤ e < s + max_answer_len) scored
              p_start·p_end, best `top_k*2+10` kept, mapped to words → character spans of the context
  all windows: answers with the same text (case-insensitive) add their scores; optional no-answer with the
              smallest null score; best first, top_k.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from app.core.errors import InputError
from app.core.export.families.base import BATCH, SEQ
from app.core.tasks.base import PredictRequest, Task, cosine
from app.core.tasks.tokenizer import TextTokenizer

DEFAULT_MAX_SEQ_LEN = 384
DEFAULT_MAX_STRIDE = 128


@dataclass(frozen=True)
class Answer:
    text: str  # "" for the no-answer
    start: int  # character offsets into the context: context[start:end] == text
    end: int
    score: float
    latency_ms: float = 0.0  # model time for the whole question (all windows)

    @property
    def is_impossible(self) -> bool:
        return self.text == "" and self.start == self.end == 0

    def to_dict(self) -> dict:
        return {"answer": self.text, "start": self.start, "end": self.end, "score": self.score,
                "latency_ms": round(self.latency_ms, 3)}


@dataclass(frozen=True)
class QAOptions:
    top_k: int = 1
    max_answer_len: int = 15  # tokens
    max_seq_len: int | None = None  # tokens per window; None: min(model maximum, 384)
    doc_stride: int | None = None  # overlap between windows; None: min(max_seq_len // 2, 128)
    handle_impossible_answer: bool = False  # allow the empty answer (SQuAD 2.0-style models)
    align_to_words: bool = True  # widen spans to whole words, as the pipeline does

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k: must be at least 1 (got {self.top_k})")
        if self.max_answer_len < 1:
            raise ValueError(f"max_answer_len: must be at least 1 (got {self.max_answer_len})")
        if self.max_seq_len is not None and self.max_seq_len < 8:
            raise ValueError(f"max_seq_len: must be at least 8 tokens (got {self.max_seq_len})")
        if self.doc_stride is not None and self.doc_stride < 0:
            raise ValueError(f"doc_stride: must not be negative (got {self.doc_stride})")

    def lengths(self, model_max_length: int) -> tuple[int, int]:
        """(max_seq_len, doc_stride) for a model; longer windows than the model takes are cut to its maximum."""
        max_seq_len = min(self.max_seq_len or DEFAULT_MAX_SEQ_LEN, model_max_length)
        doc_stride = min(max_seq_len // 2, DEFAULT_MAX_STRIDE) if self.doc_stride is None else self.doc_stride
        if doc_stride >= max_seq_len:
            raise InputError(f"doc_stride ({doc_stride}) must be smaller than max_seq_len ({max_seq_len}).")
        return max_seq_len, doc_stride


def windows(tokenizer: TextTokenizer, question: str, context: str, *, max_seq_len: int,
            doc_stride: int) -> list[Encoding]:
    """Question + context as one or more windows of at most max_seq_len tokens, overlapping by doc_stride."""
    if not question or not question.strip():
        raise InputError("The question is empty. Type a question about the context.")
    if not context or not context.strip():
        raise InputError("The context is empty. Paste the text the answer should come from.")
    first = tokenizer.encode([question], [context], truncation="only_second", max_length=max_seq_len,
                             stride=doc_stride)[0]
    return [first, *first.overflowing]


def p_mask(window: Encoding, cls_token_id: int | None) -> np.ndarray:
    """1 where a token cannot be part of the answer (question, specials, padding), 0 on context and CLS."""
    mask = np.array([sid != 1 for sid in window.sequence_ids], dtype=bool)  # (seq,)
    if cls_token_id is not None:
        mask[np.asarray(window.ids) == cls_token_id] = False
    return mask


def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (start, end) spans by p_start·p_end with start ≤ end < start + max_answer_len."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))  # (1, seq, seq)
    candidates = np.tril(np.triu(outer), max_answer_len - 1)  # (1, seq, seq)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # As in the pipeline: `nonzero()` of the (1, seq) mask also yields its row indices (0), so index 0 passes.
    allowed = undesired_tokens.nonzero()
    desired = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[desired], ends[desired]
    return starts, ends, candidates[0, starts, ends]


def select_starts_ends(start: np.ndarray, end: np.ndarray, mask: np.ndarray, attention_mask: np.ndarray | None,
                       min_null_score: float = 1000000, top_k: int = 1, handle_impossible_answer: bool = False,
                       max_answer_len: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Softmax over the window's allowed tokens, null score, then `decode_spans`. Arrays are (1, seq)."""
    undesired_tokens = np.abs(np.asarray(mask, dtype=np.int64) - 1)  # (1, seq): 1 = may be in the answer
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def _char_span(window: Encoding, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        try:
            start_word, end_word = window.token_to_word(s), window.token_to_word(e)
            return (window.word_to_chars(start_word, sequence_index=1)[0],
                    window.word_to_chars(end_word, sequence_index=1)[1])
        except Exception:  # CLS and other tokens without a word: fall back to token offsets, as the pipeline does
            pass
    return window.offsets[s][0], window.offsets[e][1]


def postprocess(encodings: list[Encoding], start_logits: np.ndarray, end_logits: np.ndarray, context: str, *,
                cls_token_id: int | None, options: QAOptions = QAOptions(),
                latency_ms: float = 0.0) -> list[Answer]:
    """Windows and their (windows, seq) logits (padding allowed past each window's length) → best answers."""
    min_null_score = 1000000.0
    found: list[dict] = []
    pre_topk = options.top_k * 2 + 10 if options.align_to_words else options.top_k
    for i, window in enumerate(encodings):
        n = len(window.ids)
        start = np.asarray(start_logits[i, :n], dtype=np.float32)[None]  # (1, seq)
        end = np.asarray(end_logits[i, :n], dtype=np.float32)[None]  # (1, seq)
        attention = np.asarray(window.attention_mask, dtype=np.int64)[None]  # (1, seq)
        starts, ends, scores, min_null_score = select_starts_ends(
            start, end, p_mask(window, cls_token_id)[None], attention, min_null_score, pre_topk,
            options.handle_impossible_answer, options.max_answer_len)
        for s, e, score in zip(starts, ends, scores):
            a, b = _char_span(window, int(s), int(e), options.align_to_words)
            text = context[a:b]
            same = next((f for f in found if f["text"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score.item()
            else:
                found.append({"text": text, "start": a, "end": b, "score": score.item()})
    if options.handle_impossible_answer:
        found.append({"text": "", "start": 0, "end": 0, "score": min_null_score})
    found = sorted(found, key=lambda f: f["score"], reverse=True)[: options.top_k]
    return [Answer(f["text"], f["start"], f["end"], float(f["score"]), latency_ms) for f in found]


# --- the plug-in ---------------------------------------------------------------------------------------------

def best_spans(start: np.ndarray, end: np.ndarray, mask: np.ndarray, max_len: int = 15) -> list[tuple[int, int]]:
    """The highest-scoring (start, end) with start <= end < start + max_len over real tokens, per example."""
    seq = start.shape[-1]
    offset = np.arange(seq)[None, :] - np.arange(seq)[:, None]  # (start, end): end - start
    allowed = (offset >= 0) & (offset < max_len)
    spans = []
    for s, e, m in zip(start, end, mask.astype(bool)):
        scores = np.where(m, s, -np.inf)[:, None] + np.where(m, e, -np.inf)[None, :]  # (start, end)
        i, j = np.unravel_index(np.argmax(np.where(allowed, scores, -np.inf)), scores.shape)
        spans.append((int(i), int(j)))
    return spans


class QuestionAnsweringTask(Task):
    name = "question-answering"
    title = "Question answering"
    view = "qa"
    hub_tags = ("question-answering",)
    architecture_suffixes = ("ForQuestionAnswering",)
    output_names = ("start_logits", "end_logits")
    metrics = {"f1": ("F1", 1.0), "exact_match": ("Exact match", 1.0)}  # SQuAD's script gives 0..100
    data_formats = "SQuAD questions (*.json)"
    agreement_words = "same answer text"

    def build_head(self, builder, x: str) -> None:
        #  x ─ Linear(qa_outputs, 2) ─ Split ─ Squeeze ─► start_logits, end_logits [B, S]
        g = builder.g
        both = builder.linear(x, "qa_outputs", builder.spec.hidden_size, 2, "/qa_outputs")
        start, end = g.node("Split", [both], "/qa_outputs/Split", outputs=2, axis=-1)
        for name, part in (("start_logits", start), ("end_logits", end)):
            g.output(g.node("Squeeze", [part, g.const([-1])], f"/qa_outputs/Squeeze_{name}"), name, [BATCH, SEQ])

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        if path is None:
            from app.core.calibration import QA_EXAMPLES

            # Each question against its own context, alone and followed by every other context: the answer is
            # still there, among more distractors, as in multi-paragraph documents.
            qa = [(q, c if other is None else f"{c} {other}") for c, questions in QA_EXAMPLES for q in questions
                  for other in (None, *(o for o, _ in QA_EXAMPLES if o != c))]
            return qa, f"built-in, {len(qa)} questions"
        from app.core.eval import SquadData, load_data

        data = load_data(path)
        if not isinstance(data, SquadData):
            raise InputError(f"{path} is not SQuAD JSON; a question answering model needs questions with their "
                             "contexts for its calibration.")
        return [(e.question, e.context) for e in data.examples], f"{Path(path).name}, {len(data.examples)} questions"

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict]:
        return [tokenizer.batch([q], [c], truncation="only_second", max_length=max_length)[0].feeds(spec.input_names)
                for q, c in examples]

    def agreement(self, spec, reference, outputs, feeds):
        same, cos = [], []
        for ref, out, feed in zip(reference, outputs, feeds):
            mask = feed["attention_mask"].astype(bool)
            spans_a = best_spans(ref["start_logits"], ref["end_logits"], mask)
            spans_b = best_spans(out["start_logits"], out["end_logits"], mask)
            # The same answer = overlapping spans: "Santa Clara" vs "Santa Clara, California" is one answer;
            # exact span equality flips on near-ties that change no one's reading (SQuAD F1 moved 0.1 point).
            same += [x[0] <= y[1] and y[0] <= x[1] for x, y in zip(spans_a, spans_b)]
            cos += [float(np.mean([cosine(ref[k][i][m], out[k][i][m]) for k in ("start_logits", "end_logits")]))
                    for i, m in enumerate(mask)]
        return same, cos

    def check(self, request: PredictRequest) -> None:
        if request.question is None or request.context is None:
            raise InputError("Give --question with --context: the question and the text the answer should come from.")

    def predict(self, runner, request: PredictRequest) -> list[Answer]:
        return runner.answer(request.question, request.context, top_k=request.top_k or 1,
                             max_answer_len=request.max_answer_len, handle_impossible_answer=request.allow_no_answer)

    def agree(self, fp32_result, int8_result) -> bool:
        best = [r[0].text if r else None for r in (fp32_result, int8_result)]
        return best[0] == best[1]

    def result_json(self, result):
        return [a.to_dict() for a in result]

    def result_rows(self, fp32_result, int8_result):
        def cell(ans):
            return f"{'(no answer)' if ans.is_impossible else repr(ans.text)} {ans.score:.4f} [{ans.start}:{ans.end}]"

        rows = [("answer" if i == 0 else "", *[cell(v[i]) if i < len(v) else "" for v in (fp32_result, int8_result)])
                for i in range(max(len(fp32_result), len(int8_result)))]
        latency = [f"{v[0].latency_ms if v else 0:.1f} ms" for v in (fp32_result, int8_result)]
        return rows + [("latency", *latency)]

    def load_data(self, path: Path, **options):
        from app.core.eval import load_data

        return load_data(path, **options)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        from app.core.eval import evaluate_qa

        return evaluate_qa(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = QuestionAnsweringTask()
