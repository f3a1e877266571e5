"""Text generation with a decoder's KV cache: the task plug-in (tied LM head, guard, predict, eval).

  prompt ─ tokenize ─ run(ids [1,S], empty past) ─ logits[-1] ─ pick ─┐   time to first token
        ┌───────────────────────────── present k/v become the past ◄──┘
        └─ run(next id [1,1], past [.., P, d]) ─ logits ─ pick ─ … until EOS, max_new_tokens or a full context

Scope:
- `generate(runner, prompt, options)`: greedy by default, sampling with temperature / top-k / top-p and a seed
  (Gumbel-max on numpy's generator: the same seed gives the same tokens), stopping at EOS (a model without one
  runs to max_new_tokens); each step feeds one token and the cache, never the prompt again. A prompt longer than
  the context keeps its last n_positions - 1 tokens and says how many it dropped. `on_token` streams tokens (the
  GUI), `cancel` stops between steps.
- `score(runner, ids)`: teacher-forced logits of one window; `strided_windows`: the windows and the positions
  each one scores, as Hugging Face's perplexity guide strides them.
- The guard's agreement: per calibration text, the share of positions where INT8's top-1 next token is FP32's
  (or a near-tie of it, within NEAR_TIE in FP32's log-probabilities), and the perplexity ratio
  exp(-|mean NLL INT8 - mean NLL FP32|) in the cosine's place.
- `eval MODEL --data FILE.txt`: perplexity and next-token accuracy for FP32 and INT8, next-token agreement, and
  greedy-continuation agreement over prompts taken from the file.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.core.errors import InputError, InvalidModelError, UnsupportedModelError
from app.core.export.families.base import BATCH, SEQ
from app.core.progress import ProgressFn, check_cancel, report
from app.core.tasks.base import PredictRequest, Task

DEFAULT_NEW_TOKENS = 32
NEAR_TIE = 0.05  # the guard: INT8's pick within this log-probability of FP32's best counts as the same
GREEDY_PROMPT_TOKENS, GREEDY_NEW_TOKENS, GREEDY_PROMPTS = 16, 24, 24  # eval's greedy-continuation check


# --- options and results -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.0  # 0: greedy; > 0 samples (top_k / top_p alone sample at temperature 1)
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens}).")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError(f"--temperature must be 0 (greedy) or more (got {self.temperature}).")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"--top-k must be at least 1 (got {self.top_k}).")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"--top-p must be within (0, 1] (got {self.top_p}).")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0 or self.top_k is not None or self.top_p is not None


@dataclass(frozen=True)
class Generation:
    """One model's continuation of a prompt."""

    prompt: str
    text: str  # the continuation only, special tokens dropped
    token_ids: tuple[int, ...]  # generated tokens (the EOS included when it stopped there)
    ttft_ms: float  # prompt step + first token
    tokens_per_s: float  # decode speed after the first token (0 when only one token)
    stopped: str  # "eos", "max_new_tokens", "context" (the model's n_positions reached) or "cancelled"
    prompt_tokens: int
    prompt_truncated: int = 0  # prompt tokens dropped from the start to fit the context
    step_ms: tuple[float, ...] = field(default=(), repr=False)  # each model call (the first is the prompt)

    def to_dict(self) -> dict:
        return {"text": self.text, "token_ids": list(self.token_ids), "ttft_ms": round(self.ttft_ms, 3),
                "tokens_per_s": round(self.tokens_per_s, 2), "stopped": self.stopped,
                "prompt_tokens": self.prompt_tokens, "prompt_truncated": self.prompt_truncated}


# --- the decoder loop ----------------------------------------------------------------------------------------

def _cache_shape(runner) -> tuple[int, int, int]:
    """(layers, heads, head dim) of the graph's past inputs; a clear error for a graph without a cache."""
    names = [i for i in runner.input_names if i.startswith("past_key_values.")]
    s = runner.spec
    if "position_ids" not in runner.input_names or len(names) != 2 * s.num_layers:
        raise InvalidModelError(f"{runner.folder}: the ONNX model has no KV-cache inputs (past_key_values.N.key/value, "
                                "position_ids). Re-convert it with this version of Pocket NLP.")
    return s.num_layers, s.num_heads, s.hidden_size // s.num_heads


def empty_past(runner, batch: int = 1) -> dict[str, np.ndarray]:
    layers, heads, d = _cache_shape(runner)
    empty = np.zeros((batch, heads, 0, d), np.float32)  # (batch, heads, past, head dim)
    return {f"past_key_values.{i}.{kv}": empty for i in range(layers) for kv in ("key", "value")}


def decoder_feeds(ids: np.ndarray, past: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict:
    """Feeds for one step: `ids` (batch, new), the cache (batch, heads, P, d), positions P..P+new-1."""
    p = next(iter(past.values())).shape[2] if past else 0
    mask = np.ones((ids.shape[0], p + ids.shape[1]), np.int64) if mask is None else mask  # (batch, P + new)
    positions = np.cumsum(mask, axis=1)[:, p:] - 1  # (batch, new): padding does not advance positions
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
            "position_ids": np.maximum(positions, 0).astype(np.int64), **past}


def run_step(runner, feeds: dict) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """(logits (batch, new, vocab), the present cache renamed as the next past, ms) for one model call."""
    names = [o.name for o in runner.session.get_outputs()]
    start = time.perf_counter()
    try:
        outputs = dict(zip(names, runner.session.run(names, feeds)))
    except Exception as e:  # onnxruntime's own exception types
        raise InvalidModelError(f"ONNX Runtime failed on {runner.folder} ({e}).") from e
    ms = (time.perf_counter() - start) * 1000
    past = {n.replace("present.", "past_key_values.", 1): v for n, v in outputs.items() if n.startswith("present.")}
    return outputs["logits"], past, ms


def eos_id(runner) -> int | None:
    """config.json's eos_token_id, else the tokenizer's <|endoftext|>; None when the model has neither."""
    eos = runner.spec.options.get("eos_token_id")
    if eos is None:
        eos = runner.tokenizer.tokenizer.token_to_id("<|endoftext|>")
    return eos


def pick(logits: np.ndarray, options: GenerationOptions, rng: np.random.Generator) -> int:
    """The next token from (vocab,) logits: argmax, or a sample as transformers' temperature → top-k → top-p."""
    if not options.sampling:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / (options.temperature or 1.0)
    if options.top_k is not None and options.top_k < len(z):
        z[z < np.partition(z, -options.top_k)[-options.top_k]] = -np.inf
    if options.top_p is not None and options.top_p < 1:
        order = np.argsort(-z, kind="stable")
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        cut = np.searchsorted(np.cumsum(p), options.top_p) + 1  # the smallest head with mass >= top_p
        z[order[cut:]] = -np.inf
    # Gumbel-max: argmax(z + Gumbel noise) is a draw from softmax(z). FP32 and INT8 given the same seed get the same
    # noise, so their samples differ only where their distributions do (rng.choice's inverse CDF would shift on
    # tiny differences summed over the vocabulary).
    return int(np.argmax(z + rng.gumbel(size=z.shape)))


def prompt_ids(runner, prompt: str) -> list[int]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty. Type the beginning of a text for the model to continue.")
    return list(runner.tokenizer.encode([prompt], truncation=None)[0].ids)


def generate(runner, prompt: str | list[int], options: GenerationOptions = GenerationOptions(), *,
             on_token: Callable[[int, int, str], None] | None = None,
             cancel: threading.Event | None = None) -> Generation:
    """Continue `prompt` with the runner's decoder, one token per model call after the prompt.

    A prompt longer than the context (n_positions less one) keeps its last tokens (`prompt_truncated` says how
    many were dropped); generation stops when the context is full. `on_token(i, token_id, text_so_far)` is
    called after each token. `prompt` may be token ids already (benchmarks)."""
    ids = prompt_ids(runner, prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise InputError("The prompt is empty. Type the beginning of a text for the model to continue.")
    context = runner.spec.max_position_embeddings
    dropped = max(0, len(ids) - (context - 1))
    ids = ids[dropped:]
    eos, rng = eos_id(runner), np.random.default_rng(options.seed)
    tokenizer = runner.tokenizer.tokenizer
    start = time.perf_counter()
    logits, past, ms = run_step(runner, decoder_feeds(np.array([ids]), empty_past(runner)))
    out, steps, stopped, ttft = [], [ms], "max_new_tokens", 0.0
    while True:
        token = pick(logits[0, -1], options, rng)
        out.append(token)
        if len(out) == 1:
            ttft = (time.perf_counter() - start) * 1000
        if on_token is not None:
            on_token(len(out) - 1, token, tokenizer.decode(out, skip_special_tokens=True))
        if eos is not None and token == eos:
            stopped = "eos"
            break
        if len(out) >= options.max_new_tokens:
            break
        if len(ids) + len(out) >= context:
            stopped = "context"
            break
        if cancel is not None and cancel.is_set():
            stopped = "cancelled"
            break
        logits, past, ms = run_step(runner, decoder_feeds(np.array([[token]]), past))
        steps.append(ms)
    decode_s = time.perf_counter() - start - ttft / 1000
    return Generation(prompt=prompt if isinstance(prompt, str) else tokenizer.decode(ids),
                      text=tokenizer.decode(out, skip_special_tokens=True), token_ids=tuple(out), ttft_ms=ttft, tokens_per_s=(len(out) - 1) / decode_s if len(out) > 1 and decode_s > 0 else 0.0,
                      stopped=stopped, prompt_tokens=len(ids), prompt_truncated=dropped, step_ms=tuple(steps))


# --- teacher-forced scoring ----------------------------------------------------------------------------------

def score(runner, ids: list[int] | np.ndarray) -> np.ndarray:
    """(len(ids), vocab) logits of one window, the whole window in one call with an empty cache."""
    logits, _, _ = run_step(runner, decoder_feeds(np.asarray([ids]), empty_past(runner)))
    return logits[0]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def next_token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under (n, vocab) logits predicting it."""
    return -np.take_along_axis(log_softmax(logits), np.asarray(targets)[:, None], axis=-1)[:, 0]


def strided_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored target) per window: every token after the first is scored once, with up to
    `window - stride` tokens of context carried over (Hugging Face's perplexity guide)."""
    spans, prev_end, begin = [], 0, 0
    while prev_end < n_tokens:
        end = min(begin + window, n_tokens)
        spans.append((begin, end, max(prev_end, begin + 1)))
        prev_end, begin = end, begin + stride
    return [s for s in spans if s[2] < s[1]]


# --- data and evaluation -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextData:
    path: Path
    text: str
    lines: tuple[str, ...]  # non-empty lines: greedy-continuation prompts come from them
    task: str = "text-generation"
    labels: tuple[str, ...] = ()


def load_text(path: Path) -> TextData:
    from app.core.eval import _read_text

    path = Path(path)
    if path.suffix.lower() != ".txt":
        raise InputError(f"{path}: a text-generation model is evaluated on plain text. Give a .txt file (UTF-8).")
    text = _read_text(path)
    lines = tuple(t.strip() for t in text.splitlines() if t.strip())
    if not lines:
        raise InputError(f"{path}: the file has no text.")
    return TextData(path, text, lines)


def evaluate_generation(fp32, int8, data: TextData, *, limit: int | None = None, window: int | None = None,
                        progress: ProgressFn | None = None, cancel: threading.Event | None = None):
    """Perplexity (strided windows), next-token accuracy and agreement, and greedy-continuation agreement."""
    from app.core.eval import (
        MAX_DISAGREEMENTS,
        Disagreement,
        EvalResult,
        ModelEval,
        _check_runners,
    )

    _check_runners(fp32, int8, data)
    tokenizer = fp32.tokenizer.tokenizer
    ids = np.array(fp32.tokenizer.encode(["\n".join(data.lines)], truncation=None)[0].ids, np.int64)
    if len(ids) < 2:
        raise InputError(f"{data.path}: too little text to score (fewer than 2 tokens).")
    window = window or min(fp32.spec.max_position_embeddings, 256)
    spans = strided_windows(len(ids), window, window // 2)[:limit]
    runners = {"fp32": fp32, "int8": int8}
    nll = {k: [] for k in runners}
    top = {k: [] for k in runners}
    seconds = dict.fromkeys(runners, 0.0)
    targets, disagreements, n_diff = [], [], 0
    for n, (begin, end, first) in enumerate(spans, start=1):
        check_cancel(cancel)
        chunk = ids[begin:end]
        t = ids[first:end]
        targets.append(t)
        for name, runner in runners.items():
            started = time.perf_counter()
            logits = score(runner, chunk)[first - begin - 1: end - begin - 1]  # (scored, vocab)
            seconds[name] += time.perf_counter() - started
            nll[name].append(next_token_nll(logits, t))
            top[name].append(logits.argmax(-1))
        for j in np.flatnonzero(top["fp32"][-1] != top["int8"][-1]):
            n_diff += 1
            if len(disagreements) < MAX_DISAGREEMENTS:
                pos = first + int(j)
                where = tokenizer.decode(ids[max(0, pos - 12):pos].tolist())
                a, b = (tokenizer.decode([int(top[k][-1][j])]) for k in ("fp32", "int8"))
                disagreements.append(Disagreement(f"token {pos}", where, (tokenizer.decode([int(ids[pos])]),), a, b,
                                                  float(-nll["fp32"][-1][j]), float(-nll["int8"][-1][j])))
        report(progress, "eval", n, len(spans), f"scored window {n} of {len(spans)}")
    gold = np.concatenate(targets)
    metrics, models = {}, {}
    for name in runners:
        loss = np.concatenate(nll[name])
        metrics[name] = {"next_token_accuracy": 100 * float((np.concatenate(top[name]) == gold).mean()),
                         "perplexity": float(np.exp(loss.mean()))}
        models[name] = ModelEval(metrics[name], 1000 * seconds[name] / len(spans), seconds[name])
    greedy = greedy_agreement(fp32, int8, data.lines, cancel=cancel)
    return EvalResult(
        task=data.task, data_path=data.path, examples=len(gold), fp32=models["fp32"], int8=models["int8"],
        agreement=1 - n_diff / len(gold), disagreements=tuple(disagreements), n_disagreements=n_diff,
        details={"agreement_means": "scored tokens whose top-1 next token is the same under INT8 as under FP32",
                 "perplexity_ratio": metrics["int8"]["perplexity"] / metrics["fp32"]["perplexity"],
                 "windows": len(spans), "window": window, "stride": window // 2, "greedy_continuation": greedy})


def greedy_agreement(fp32, int8, lines, *, prompts: int = GREEDY_PROMPTS, prompt_tokens: int = GREEDY_PROMPT_TOKENS,
                     new_tokens: int = GREEDY_NEW_TOKENS, cancel=None) -> dict:
    """Greedy continuations of the first `prompt_tokens` of up to `prompts` lines: tokens until the first
    difference (mean, and the share of prompts continued identically; two continuations that stop at the same
    EOS count as identical, all `new_tokens`)."""
    tokenizer = fp32.tokenizer
    chosen = []
    for line in lines:
        ids = tokenizer.encode([line], truncation=None)[0].ids
        if len(ids) >= prompt_tokens:
            chosen.append(tokenizer.tokenizer.decode(ids[:prompt_tokens]))
        if len(chosen) == prompts:
            break
    options = GenerationOptions(max_new_tokens=new_tokens)
    same = []
    for prompt in chosen:
        check_cancel(cancel)
        a, b = (generate(r, prompt, options).token_ids for r in (fp32, int8))
        differ = first_difference(a, b)  # None: the same tokens (both stopped at the same EOS, or ran to the end)
        same.append(new_tokens if differ is None and len(a) == len(b) else
                    min(len(a), len(b)) if differ is None else differ)
    return {"prompts": len(chosen), "new_tokens": new_tokens,
            "mean_tokens_until_difference": float(np.mean(same)) if same else 0.0,
            "identical": float(np.mean([s >= new_tokens for s in same])) if same else 0.0}


# --- the plug-in ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationPair:
    """What `predict` returns for one model: the continuation (and the request's options, for the rows)."""

    generation: Generation
    options: GenerationOptions


def options_of(request: PredictRequest) -> GenerationOptions:
    return GenerationOptions(max_new_tokens=DEFAULT_NEW_TOKENS if request.max_new_tokens is None
                             else request.max_new_tokens,
                             temperature=request.temperature or 0.0, top_k=request.top_k, top_p=request.top_p,
                             seed=request.seed)


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """Index of the first token where two continuations differ; None when one is a prefix of the other."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


class GenerationTask(Task):
    name = "text-generation"
    title = "Text generation"
    view = "generation"
    hub_tags = ("text-generation",)
    architecture_suffixes = ("LMHeadModel",)
    output_names = ("logits",)
    decoder_cache = True  # the family exports past_key_values inputs and present outputs
    # the headline first: higher is better, as the verdict and reports read it (perplexity: lower is better)
    metrics = {"next_token_accuracy": ("Next-token accuracy", 1.0), "perplexity": ("Perplexity", 1.0)}
    agreement_words = "same next token"
    data_formats = "Plain text (*.txt)"

    def build_head(self, builder, x: str) -> None:
        #  x ─ MatMul(wteᵀ, the tied embeddings) ─► logits [B, S, vocab]
        if not hasattr(builder, "lm_head"):
            raise UnsupportedModelError(f"{builder.spec.architecture}: Pocket NLP generates text with decoder models "
                                        "(GPT-2); this family has no causal language-model head.")
        builder.g.output(builder.lm_head(x), "logits", [BATCH, SEQ, builder.spec.vocab_size])

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import QA_EXAMPLES, SENTENCES
        from app.core.eval import read_lines

        if path is None:  # running text: sentences and paragraphs
            texts = [*SENTENCES, *(c for c, _ in QA_EXAMPLES)]
            return texts, f"built-in, {len(texts)} texts"
        texts = read_lines(path)
        return texts, f"{Path(path).name}, {len(texts)} texts"

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict]:
        d = spec.hidden_size // spec.num_heads
        empty = np.zeros((1, spec.num_heads, 0, d), np.float32)
        past = {f"past_key_values.{i}.{kv}": empty for i in range(spec.num_layers) for kv in ("key", "value")}
        feeds = []
        for e in tokenizer.encode(list(examples), truncation="longest_first", max_length=max_length):
            if len(e.ids) >= 2:
                feeds.append(decoder_feeds(np.array([e.ids]), past))
        return feeds

    def agreement(self, spec, reference, outputs, feeds):
        # A different top-1 that FP32 itself scores within NEAR_TIE (log-probability) of its own best is a near-tie,
        # not a changed answer: a weak model's flat distributions hold many of them.
        same, ratio = [], []
        for ref, out, feed in zip(reference, outputs, feeds):
            a, b = ref["logits"][0, :-1], out["logits"][0, :-1]  # (tokens - 1, vocab): predicting tokens 1..
            targets = feed["input_ids"][0, 1:]
            chosen = b.argmax(-1)
            gap = a.max(-1) - np.take_along_axis(a, chosen[:, None], axis=-1)[:, 0]  # FP32 logit gap, = log-prob gap
            same.append(float((gap <= NEAR_TIE).mean()))
            ratio.append(math.exp(-abs(float(next_token_nll(b, targets).mean() - next_token_nll(a, targets).mean()))))
        return same, ratio

    def check(self, request: PredictRequest) -> None:
        if request.prompt is None or not request.prompt.strip():
            raise InputError("Give --prompt: the beginning of a text for the model to continue.")
        options_of(request)

    def predict(self, runner, request: PredictRequest, *, on_token=None, cancel=None) -> GenerationPair:
        options = options_of(request)
        return GenerationPair(generate(runner, request.prompt, options, on_token=on_token, cancel=cancel), options)

    def agree(self, fp32_result, int8_result) -> bool:
        return fp32_result.generation.token_ids == int8_result.generation.token_ids

    def result_json(self, result):
        return result.generation.to_dict()

    def result_rows(self, fp32_result, int8_result):
        a, b = fp32_result.generation, int8_result.generation
        rows = [("continuation", repr(a.text), repr(b.text)), ("tokens", str(len(a.token_ids)), str(len(b.token_ids))),
                ("first token", f"{a.ttft_ms:.1f} ms", f"{b.ttft_ms:.1f} ms"),
                ("speed", f"{a.tokens_per_s:.1f} tokens/s", f"{b.tokens_per_s:.1f} tokens/s"),
                ("stopped at", a.stopped, b.stopped)]
        differ = first_difference(a.token_ids, b.token_ids)
        if differ is not None:
            rows.append(("departs", "", f"at token {differ + 1}"))
        if a.prompt_truncated:
            rows.append(("", f"(the prompt's first {a.prompt_truncated} tokens were dropped to fit the context)", ""))
        return rows

    def load_data(self, path: Path, **options):
        return load_text(path)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        return evaluate_generation(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = GenerationTask()
