"""Sentence embeddings and semantic search, computed as sentence-transformers computes them.

  input_ids ─ encoder ─ x ─┬─────────────────────────────────────────────────► token_embeddings [B, S, H]
  attention_mask ──────────┴─ pool (mean / cls / max / lasttoken, masked) ─ [L2 normalise] ─► sentence_embedding [B, H]

Scope:
- `read_pooling(folder)`: the pooling a sentence-transformers folder declares (`modules.json`, `1_Pooling/config.json`,
  `2_Normalize`, `sentence_bert_config.json`); a plain encoder gets mean pooling and says so. Anything else
  (Dense, Asym/Router, CLIP, several pooling modes at once, mean_sqrt_len / weightedmean) is refused by name.
- `add_pooling(...)`: the pooling emitted in the ONNX graph, with the two outputs Optimum's export names.
- Run time: `embed` (one text per model call: dynamic INT8 takes one activation range per call), `cosine_matrix`,
  `rank`, and `guard_agreement`, the accuracy guard's metric for embeddings.
- Evaluation: BEIR retrieval folders (nDCG@10, recall@1/10, MRR@10, as BEIR / pytrec_eval compute them) and STS
  pair files (Spearman of cosine vs gold), FP32 and INT8 in the same pass (`evaluate_embeddings`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from app.core.errors import InputError, InvalidModelError, UnsupportedModelError
from app.core.eval import (MAX_DISAGREEMENTS, Disagreement, EvalResult, ModelEval, _check_runners, _read_text,
                           delimited_rows, delimited_table, json_lines)
from app.core.export.families.base import BATCH, SEQ
from app.core.progress import ProgressFn, check_cancel, report
from app.core.tasks.base import PredictRequest, Task, cosine

log = logging.getLogger(__name__)

PoolingMode = Literal["mean", "cls", "max", "lasttoken"]
_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_MASKED = -1e9  # max pooling: padded positions, as sentence-transformers 2.x-5.x (6.x uses -inf: same unless all pad)
K = 10  # retrieval metrics cut-off


# --- the pooling a model declares ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pooling:
    mode: PoolingMode = "mean"
    normalize: bool = False
    include_prompt: bool = True
    configured: bool = False  # False: the folder has no sentence-transformers modules.json; mean pooling by default
    dimension: int | None = None  # the Pooling config's embedding dimension, checked against the encoder's
    max_seq_length: int | None = None  # sentence_bert_config.json: sentence-transformers truncates here
    lowercase: bool = False  # sentence_bert_config.json do_lower_case

    def describe(self) -> str:
        how = f"{self.mode} pooling" + (", L2-normalised" if self.normalize else "")
        if self.max_seq_length:
            how += f", inputs truncated at {self.max_seq_length} tokens"
        if not self.configured:
            how += " (no sentence-transformers modules.json: the default for a plain encoder)"
        return how

    def to_dict(self) -> dict:
        return asdict(self) | {"description": self.describe()}


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidModelError(f"{path} cannot be read as JSON ({e}). Re-download the model, or fix the file.") from e


def _transformer_settings(folder: Path) -> tuple[int | None, bool]:
    """(max_seq_length, do_lower_case) from sentence_bert_config.json, (None, False) without it."""
    path = folder / "sentence_bert_config.json"
    if not path.is_file():
        return None, False
    config = _json(path)
    length = config.get("max_seq_length") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not (length is None or (isinstance(length, int) and length > 0)):
        raise InvalidModelError(f"{path}: expected an object with a positive integer max_seq_length. Fix the file.")
    return length, bool(config.get("do_lower_case", False))


def _pooling_mode(config, path: Path) -> tuple[str, list[str]]:
    """The single pooling mode of a Pooling config (legacy pooling_mode_* booleans or sentence-transformers 6's
    pooling_mode), and what is unsupported about it."""
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [m for key, m in _LEGACY_MODES.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1:
        return "mean", [f"several pooling modes at once ({' + '.join(map(str, modes))}, concatenated) in {path}"]
    if modes[0] not in ("mean", "cls", "max", "lasttoken"):
        return "mean", [f"pooling mode {modes[0]!r} in {path} (supported: mean, cls, max, lasttoken)"]
    return modes[0], []


def read_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean pooling for a plain encoder.

    Every module is checked first; all unsupported parts are named in one UnsupportedModelError."""
    folder = Path(folder)
    max_len, lowercase = _transformer_settings(folder)
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return Pooling(max_seq_length=max_len, lowercase=lowercase)
    modules = _json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type"), str)
                                                for m in modules):
        raise InvalidModelError(f"{modules_path}: expected a list of modules like "
                                '{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}. Fix the file.')
    unsupported: list[str] = []
    mode, normalize, include_prompt, dimension, seen = "mean", False, True, None, []
    for i, module in enumerate(modules):
        kind, sub = module["type"].rsplit(".", 1)[-1], str(module.get("path", ""))
        if kind == "Transformer":
            if i != 0 or sub not in ("", "."):
                unsupported.append(f"a Transformer module at position {i}, path {sub!r} (Pocket NLP exports the "
                                   "encoder in the folder itself, as the first module)")
        elif kind == "Pooling" and seen == ["Transformer"]:
            config_path = folder / sub / "config.json"
            if not config_path.is_file():
                raise InvalidModelError(f"{modules_path} lists a Pooling module, but {config_path} is missing. "
                                        "Re-download the model with its pooling folder.")
            config = _json(config_path)
            if not isinstance(config, dict):
                raise InvalidModelError(f"{config_path}: expected a JSON object. Fix the file.")
            mode, problems = _pooling_mode(config, config_path)
            unsupported += problems
            dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
            include_prompt = bool(config.get("include_prompt", True))
        elif kind == "Normalize" and seen[-1:] == ["Pooling"]:
            config_path = folder / sub / "config.json"
            config = _json(config_path) if config_path.is_file() else {}
            source = config.get("module_input_name", "sentence_embedding") if isinstance(config, dict) else None
            if source != "sentence_embedding" or config.get("module_output_name", source) != source:
                unsupported.append(f"a Normalize module on {source!r} ({config_path})")
            normalize = True
        else:
            unsupported.append(f"a {kind} module ({sub or 'no path'}) at position {i}" +
                               (" (a projection after pooling)" if kind == "Dense" else ""))
        seen.append(kind)
    if "Pooling" not in seen:
        unsupported.append("no Pooling module after the Transformer")
    if not include_prompt:  # prompt tokens are left out of the pooling; only known when a prompt is prepended
        st_config = folder / "config_sentence_transformers.json"
        st = _json(st_config) if st_config.is_file() else {}
        prompts = st.get("prompts") if isinstance(st, dict) else None
        if isinstance(prompts, dict) and any(prompts.values()):
            unsupported.append(f"include_prompt=false with prompts ({', '.join(prompts)}): their tokens are left out "
                               "of the pooling, and Pocket NLP does not know where a typed prompt ends")
    if unsupported:
        raise UnsupportedModelError(f"{folder} is a sentence-transformers model with parts Pocket NLP cannot export: "
                                    f"{'; '.join(unsupported)}. Pick a model whose modules are Transformer, "
                                    "Pooling (one of mean, cls, max, lasttoken) and optionally Normalize.")
    return Pooling(mode=mode, normalize=normalize, include_prompt=include_prompt, configured=True,
                   dimension=dimension if isinstance(dimension, int) else None, max_seq_length=max_len,
                   lowercase=lowercase)


# --- the graph -----------------------------------------------------------------------------------------------

def add_pooling(g, x: str, attention_mask: str, pooling: Pooling, hidden: int, batch: str, seq: str) -> None:
    """Emit the graph outputs `token_embeddings` and `sentence_embedding` from the encoder output `x`.

      x [B,S,H] ───────────────────────────────────────────────────────────────► token_embeddings
      mask ─ Cast(float) ─ m [B,S] ─ Unsqueeze ─ m3 [B,S,1]
      mean:      ReduceSum(x·m3, S) ─ Div(Max(ReduceSum(m3, S), 1e-9)) ─┐
      max:       Where(m3 == 0, -1e9, x) ─ ReduceMax(S) ────────────────┤
      cls:       ArgMax(m) (first real token) ─ GatherND(x) ────────────┼─ pooled [B,H]
      lasttoken: ArgMax(m, last) (last real token) ─ GatherND(x·m3) ────┘
      pooled ─ [Div(Max(Sqrt(ReduceSum(pooled², H)), 1e-12))] ─► sentence_embedding
    """
    from onnx import TensorProto

    if pooling.dimension is not None and pooling.dimension != hidden:
        raise InvalidModelError(f"The Pooling config says the embedding dimension is {pooling.dimension}, but the "
                                f"encoder's hidden size is {hidden}. Re-download the model; the files do not match.")

    def reduce(op: str, value: str, axis: int, name: str, keepdims: int) -> str:
        if op == "ReduceSum" or g.opset >= 18:  # axes became an input (ReduceSum at opset 13, the others at 18)
            return g.node(op, [value, g.const([axis])], name, keepdims=keepdims)
        return g.node(op, [value], name, axes=[axis], keepdims=keepdims)

    g.output(x, "token_embeddings", [batch, seq, hidden])
    m = g.node("Cast", [attention_mask], "/pooling/mask/Cast", to=TensorProto.FLOAT)  # [B, S]
    m3 = g.node("Unsqueeze", [m, g.const([-1])], "/pooling/mask/Unsqueeze")  # [B, S, 1]
    if pooling.mode == "mean":
        summed = reduce("ReduceSum", g.node("Mul", [x, m3], "/pooling/mean/Mul"), 1, "/pooling/mean/ReduceSum", 0)
        count = g.node("Max", [reduce("ReduceSum", m3, 1, "/pooling/mean/count", 0), g.const(1e-9, np.float32)],
                       "/pooling/mean/count/Clamp")  # [B, 1]
        pooled = g.node("Div", [summed, count], "/pooling/mean/Div")
    elif pooling.mode == "max":
        pad = g.node("Equal", [m3, g.const(0.0, np.float32)], "/pooling/max/Equal")  # [B, S, 1] bool
        filled = g.node("Where", [pad, g.const(_MASKED, np.float32), x], "/pooling/max/Where")
        pooled = reduce("ReduceMax", filled, 1, "/pooling/max/ReduceMax", 0)
    else:  # cls: the first real token; lasttoken: the last real token (either padding side)
        last = int(pooling.mode == "lasttoken")
        index = g.node("ArgMax", [m], f"/pooling/{pooling.mode}/ArgMax", axis=1, keepdims=1,
                       select_last_index=last)  # [B, 1]
        source = g.node("Mul", [x, m3], "/pooling/lasttoken/Mul") if last else x  # an all-pad row gives zeros
        pooled = g.node("GatherND", [source, index], f"/pooling/{pooling.mode}/GatherND", batch_dims=1)  # [B, H]
    if pooling.normalize:  # as torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12)
        norm = g.node("Sqrt", [reduce("ReduceSum", g.node("Mul", [pooled, pooled], "/pooling/normalize/Square"), -1,
                                      "/pooling/normalize/ReduceSum", 1)], "/pooling/normalize/Sqrt")  # [B, 1]
        norm = g.node("Max", [norm, g.const(1e-12, np.float32)], "/pooling/normalize/Clamp")
        pooled = g.node("Div", [pooled, norm], "/pooling/normalize/Div")
    g.output(pooled, "sentence_embedding", [batch, hidden])


# --- run time ------------------------------------------------------------------------------------------------

def window(runner) -> tuple[int, bool]:
    """(max tokens per text, lowercase first): sentence_bert_config.json's max_seq_length when the model folder
    has one (sentence-transformers truncates there), else the model's own limit."""
    max_len, lowercase = _transformer_settings(Path(runner.folder))
    return min(runner.tokenizer.max_length, max_len or runner.tokenizer.max_length), lowercase


def _embed_one(runner, text: str, limit: int, lowercase: bool) -> tuple[np.ndarray, float, bool]:
    if not isinstance(text, str):
        raise InputError(f"Expected a text, got {type(text).__name__}.")
    batch, encodings = runner.tokenizer.batch([text.lower() if lowercase else text], max_length=limit)
    outputs, ms = runner.run(batch.feeds(runner.input_names))
    return outputs["sentence_embedding"][0], ms, bool(encodings[0].overflowing)  # (d,)


def embed(runner, texts: list[str], *, cancel: threading.Event | None = None) -> tuple[np.ndarray, list[float]]:
    """(n, d) float32 sentence embeddings and each text's model ms, one text per model call.

    Texts longer than the window are truncated, as sentence-transformers does; a warning says how many."""
    limit, lowercase = window(runner)
    vectors, times, cut = [], [], 0
    for text in texts:
        check_cancel(cancel)
        vec, ms, truncated = _embed_one(runner, text, limit, lowercase)
        vectors.append(vec)
        times.append(ms)
        cut += truncated
    if cut:
        log.warning("%d of %d texts were longer than %d tokens and were truncated", cut, len(texts), limit)
    return np.asarray(vectors, np.float32).reshape(len(vectors), -1 if vectors else runner.spec.hidden_size), times


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.atleast_2d(np.asarray(a, np.float32))  # (n, d)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities between the rows of a (n, d) and b (m, d); 1-D inputs count as one row."""
    return _unit(a) @ _unit(b).T  # (n, m)


@dataclass(frozen=True)
class Hit:
    index: int
    score: float  # cosine similarity
    text: str


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first; ties by lower index."""
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return idx[np.lexsort((idx, -scores[idx]))]


def rank(query_vec: np.ndarray, doc_vecs: np.ndarray, texts: list[str], top_k: int | None = None) -> list[Hit]:
    """Documents best first by cosine with the query (exact search)."""
    if len(texts) != len(doc_vecs):
        raise ValueError(f"{len(doc_vecs)} document vectors but {len(texts)} texts")
    if not len(texts):
        return []
    scores = cosine_matrix(query_vec, doc_vecs)[0]  # (m,)
    return [Hit(int(i), float(scores[i]), texts[i]) for i in _top(scores, top_k or len(texts))]


def guard_agreement(reference: list[dict], outputs: list[dict], *,
                    tolerance: float = 0.0) -> tuple[list[bool], list[float]]:
    """Per calibration example: is its nearest neighbour among the other examples the same under INT8 as under
    FP32, and the cosine between its FP32 and INT8 embeddings. Each dict holds "sentence_embedding" (k, d).

    With `tolerance`, a different neighbour still counts as the same when FP32 itself scores it within
    `tolerance` of its own best (a near-tie: the built-in set's fragments of one sentence are such ties)."""
    a = np.concatenate([r["sentence_embedding"] for r in reference]).astype(np.float32)  # (n, d)
    b = np.concatenate([o["sentence_embedding"] for o in outputs]).astype(np.float32)  # (n, d)
    if a.shape != b.shape:
        raise ValueError(f"FP32 embeddings {a.shape} vs INT8 {b.shape}: not the same examples")
    if len(a) < 2:
        return [True] * len(a), cosine(a, b).tolist()
    sa, sb = cosine_matrix(a, a), cosine_matrix(b, b)  # (n, n)
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    rows, best, chosen = np.arange(len(a)), sa.argmax(1), sb.argmax(1)  # (n,)
    same = (best == chosen) | (sa[rows, best] - sa[rows, chosen] <= tolerance)
    return same.tolist(), cosine(a, b).tolist()


# --- data ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetrievalData:
    path: Path
    corpus: dict[str, str]  # doc id → text (title + " " + text, as BEIR's sentence-transformers wrapper)
    queries: dict[str, str]  # query id → text, only queries with a relevant document
    qrels: dict[str, dict[str, int]]  # query id → doc id → graded relevance
    task: str = "feature-extraction"
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class StsData:
    path: Path
    pairs: tuple[tuple[str, str, float, int], ...]  # (sentence1, sentence2, gold score, line)
    task: str = "feature-extraction"


def _jsonl(path: Path, fields: tuple[str, ...]) -> dict[str, tuple[dict, int]]:
    """id → (object, line) for a JSON-lines file whose objects have `_id` and the string `fields`."""
    rows: dict[str, tuple[dict, int]] = {}
    for n, obj in json_lines(path, _read_text(path), '{"_id": "...", "text": "..."}'):
        if not isinstance(obj.get("_id"), (str, int)) or isinstance(obj.get("_id"), bool):
            raise InputError(f"{path}, line {n}, field '_id': missing or not a string.")
        for name in fields:
            if not isinstance(obj.get(name) if name != "title" else obj.get(name) or "", str):
                raise InputError(f"{path}, line {n}, field {name!r}: missing or not a string.")
        key = str(obj["_id"])
        if key in rows:
            raise InputError(f"{path}, line {n}: _id {key!r} already used on line {rows[key][1]}. Ids must be unique.")
        rows[key] = (obj, n)
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def load_beir(folder: Path) -> RetrievalData:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/test.tsv (query-id, corpus-id, score; a header line)."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / "test.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            raise InputError(f"{folder}: no {path.relative_to(folder)}. A BEIR folder holds corpus.jsonl, "
                             "queries.jsonl and qrels/test.tsv.")
    docs = _jsonl(folder / "corpus.jsonl", ("text", "title"))
    corpus = {k: (f"{o['title']} {o['text']}" if o.get("title") else o["text"]).strip()
              for k, (o, _) in docs.items()}
    queries = {k: o["text"] for k, (o, _) in _jsonl(folder / "queries.jsonl", ("text",)).items()}
    qrels: dict[str, dict[str, int]] = {}
    for n, row in delimited_rows(qrels_path, _read_text(qrels_path), "\t"):
        if len(row) < 3:
            raise InputError(f"{qrels_path}, line {n}: expected query-id, corpus-id and score separated by tabs.")
        qid, did, score = (c.strip() for c in row[:3])
        if n == 1 and not _is_int(score):
            continue  # the header
        if not _is_int(score):
            raise InputError(f"{qrels_path}, line {n}, field 'score': {score!r} is not an integer relevance.")
        if did not in corpus:
            raise InputError(f"{qrels_path}, line {n}: corpus-id {did!r} is not in corpus.jsonl.")
        if qid not in queries:
            raise InputError(f"{qrels_path}, line {n}: query-id {qid!r} is not in queries.jsonl.")
        qrels.setdefault(qid, {})[did] = int(score)
    warnings = []
    unjudged = [q for q in queries if q not in qrels]
    if unjudged:
        warnings.append(f"{len(unjudged)} of {len(queries)} queries have no qrels and were skipped")
    irrelevant = [q for q in qrels if not any(r > 0 for r in qrels[q].values())]
    if irrelevant:
        warnings.append(f"{len(irrelevant)} queries have no relevant document (every score <= 0) and were skipped")
    kept = {q: queries[q] for q in queries if q in qrels and q not in irrelevant}
    if not kept:
        raise InputError(f"{qrels_path}: no query has a relevant document (a qrel with score > 0).")
    return RetrievalData(folder, corpus, kept, {q: qrels[q] for q in kept}, warnings=tuple(warnings))


_STS_COLUMNS = (("sentence1",), ("sentence2",), ("score", "similarity_score", "relatedness_score", "label"))


def load_sts(path: Path) -> StsData:
    """Sentence pairs with gold similarity: TSV or CSV whose header names sentence1, sentence2 and score."""
    path = Path(path)
    text = _read_text(path)
    tab = path.suffix.lower() in (".tsv", ".tab") or (path.suffix.lower() != ".csv" and "\t" in text.split("\n", 1)[0])
    header_line, header, rows = delimited_table(path, text, "\t" if tab else ",")
    header = [h.lower() for h in header]
    columns = []
    for names in _STS_COLUMNS:
        found = [header.index(n) for n in names if n in header]
        if not found:
            raise InputError(f"{path}, line {header_line}: no {names[0]!r} column; the columns are "
                             f"{', '.join(header)}. An STS file needs sentence1, sentence2 and score.")
        columns.append(found[0])
    pairs = []
    for n, row in rows:
        if len(row) <= max(columns):
            raise InputError(f"{path}, line {n}: {len(row)} fields, but the header has {len(header)}.")
        s1, s2, raw = (row[c] for c in columns)
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(f"{path}, line {n}, field {header[columns[2]]!r}: {raw!r} is not a number.")
        for name, value in (("sentence1", s1), ("sentence2", s2)):
            if not value.strip():
                raise InputError(f"{path}, line {n}, field {name!r}: empty. Every row needs two sentences.")
        pairs.append((s1, s2, score, n))
    if not pairs:
        raise InputError(f"{path}: no sentence pairs (the file has a header but no rows).")
    return StsData(path, tuple(pairs))


def load_embedding_data(path: Path) -> RetrievalData | StsData:
    """A folder → BEIR retrieval; a file → STS pairs."""
    path = Path(path)
    if path.is_dir():
        return load_beir(path)
    if path.is_file():
        return load_sts(path)
    raise InputError(f"{path}: no such file or folder. Give a BEIR folder (corpus.jsonl, queries.jsonl, "
                     "qrels/test.tsv) or an STS file (sentence1, sentence2, score).")


# --- metrics -------------------------------------------------------------------------------------------------

def retrieval_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 (graded gains, log2 discount, as pytrec_eval's ndcg_cut_10), recall@1, recall@10 and MRR@10 over
    the queries of `ranked` (doc ids best first), 0..100. A query without a relevant document scores 0."""
    if not ranked:
        raise ValueError("no ranked queries")
    totals = {"ndcg@10": 0.0, "recall@1": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    for qid, docs in ranked.items():
        rels = {d: r for d, r in qrels.get(qid, {}).items() if r > 0}
        if not rels:
            continue
        top = docs[:K]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rels.values(), reverse=True)[:K]))
        totals["ndcg@10"] += dcg / idcg
        totals["recall@1"] += len(rels.keys() & set(docs[:1])) / len(rels)
        totals["recall@10"] += len(rels.keys() & set(top)) / len(rels)
        totals["mrr@10"] += next((1 / (i + 1) for i, d in enumerate(top) if d in rels), 0.0)
    return {k: 100 * v / len(ranked) for k, v in totals.items()}


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata(method='average'))."""
    order = np.argsort(v, kind="mergesort")
    inverse = np.empty(len(v), np.intp)
    inverse[order] = np.arange(len(v))
    sorted_v = v[order]
    starts = np.r_[True, sorted_v[1:] != sorted_v[:-1]]
    group = np.cumsum(starts)[inverse]  # (n,) 1-based group of each value
    bounds = np.r_[np.flatnonzero(starts), len(v)]  # group g spans sorted positions bounds[g-1] .. bounds[g]-1
    return 0.5 * (bounds[group - 1] + bounds[group] + 1)


def spearman(x, y) -> float:
    """Spearman's rank correlation with average ranks for ties, as scipy.stats.spearmanr; NaN if a side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D sequences of equal length (got {x.shape} and {y.shape})")
    rx, ry = _average_ranks(x) if len(x) else x, _average_ranks(y) if len(y) else y
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom else math.nan


# --- evaluation ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Embedded:
    vectors: dict[str, np.ndarray]  # "fp32"/"int8" → (n, d)
    ms: dict[str, float]  # total model ms
    seconds: dict[str, float]  # wall time, tokenization included
    truncated: int  # texts cut to the window
    window: int


def _embed_both(runners: dict, texts: list[str], progress, cancel) -> _Embedded:
    """Both models, one text per call, interleaved text by text (the two share the CPU fairly)."""
    settings = {name: window(r) for name, r in runners.items()}
    vectors = {name: [] for name in runners}
    ms = dict.fromkeys(runners, 0.0)
    seconds = dict.fromkeys(runners, 0.0)
    truncated = 0
    report(progress, "eval", 0, len(texts), f"embedding {len(texts)} texts with both models")
    for n, text in enumerate(texts, start=1):
        check_cancel(cancel)
        for name, runner in runners.items():
            start = time.perf_counter()
            vec, t, cut = _embed_one(runner, text, *settings[name])
            seconds[name] += time.perf_counter() - start
            vectors[name].append(vec)
            ms[name] += t
            truncated += cut and name == "fp32"
        if n == len(texts) or n % 20 == 0:
            report(progress, "eval", n, len(texts), f"embedded {n} of {len(texts)} texts")
    return _Embedded({k: np.asarray(v, np.float32) for k, v in vectors.items()}, ms, seconds, truncated,
                     settings["fp32"][0])


def _search(queries: np.ndarray, docs: np.ndarray, doc_ids: list[str], qids: list[str]) -> dict[str, list[tuple]]:
    """Exact cosine search: query id → [(doc id, score)] best first, top K; a doc with the query's own id is
    ignored (BEIR's ignore_identical_ids)."""
    position = {d: i for i, d in enumerate(doc_ids)}
    unit_docs = _unit(docs)  # (m, d)
    out = {}
    for lo in range(0, len(qids), 256):  # bounded memory: 256 x corpus scores at a time
        scores = _unit(queries[lo: lo + 256]) @ unit_docs.T  # (q, m)
        for qid, row in zip(qids[lo: lo + 256], scores):
            if qid in position:
                row[position[qid]] = -np.inf
            out[qid] = [(doc_ids[i], float(row[i])) for i in _top(row, K) if np.isfinite(row[i])]
    return out


def _model_evals(metrics: dict, emb: _Embedded, n_texts: int) -> dict[str, ModelEval]:
    return {name: ModelEval(metrics[name], emb.ms[name] / n_texts, emb.seconds[name]) for name in ("fp32", "int8")}


def _snippet(doc_id: str, text: str) -> str:
    return f"{doc_id}: {text[:80]}{'…' if len(text) > 80 else ''}"


def _evaluate_retrieval(runners, data: RetrievalData, limit, progress, cancel) -> EvalResult:
    qids = list(data.queries)[:limit] if limit else list(data.queries)
    doc_ids = list(data.corpus)
    texts = [data.corpus[d] for d in doc_ids] + [data.queries[q] for q in qids]
    emb = _embed_both(runners, texts, progress, cancel)
    hits = {name: _search(v[len(doc_ids):], v[: len(doc_ids)], doc_ids, qids) for name, v in emb.vectors.items()}
    metrics = {name: retrieval_metrics({q: [d for d, _ in h[q]] for q in qids}, data.qrels)
               for name, h in hits.items()}
    disagreements = []
    for q in qids:
        (a, sa), (b, sb) = (hits[name][q][0] if hits[name][q] else ("", 0.0) for name in ("fp32", "int8"))
        if a != b:
            gold = tuple(sorted((d for d, r in data.qrels[q].items() if r > 0), key=lambda d: -data.qrels[q][d]))
            disagreements.append(Disagreement(f"query {q}", data.queries[q], gold, _snippet(a, data.corpus.get(a, "")),
                                              _snippet(b, data.corpus.get(b, "")), sa, sb))
    models = _model_evals(metrics, emb, len(texts))
    return EvalResult(
        task=data.task, data_path=data.path, examples=len(qids), fp32=models["fp32"], int8=models["int8"],
        agreement=1 - len(disagreements) / len(qids),
        disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]), n_disagreements=len(disagreements),
        details={"embedding_eval": "retrieval", "corpus_documents": len(doc_ids),
                 "agreement_means": "queries whose top-1 document is the same under INT8 as under FP32",
                 "mean_cosine_fp32_int8": float(cosine(emb.vectors["fp32"], emb.vectors["int8"]).mean()),
                 "truncated_texts": emb.truncated, "max_tokens": emb.window, "data_warnings": list(data.warnings)})


def _evaluate_sts(runners, data: StsData, limit, progress, cancel) -> EvalResult:
    pairs = data.pairs[:limit] if limit else data.pairs
    unique = list(dict.fromkeys(s for p in pairs for s in p[:2]))
    row = {s: i for i, s in enumerate(unique)}
    emb = _embed_both(runners, unique, progress, cancel)
    first, second = [row[p[0]] for p in pairs], [row[p[1]] for p in pairs]
    cos = {name: cosine(v[first], v[second]) for name, v in emb.vectors.items()}  # (pairs,)
    gold = [p[2] for p in pairs]
    metrics = {name: {"spearman": 100 * spearman(c, gold)} for name, c in cos.items()}
    differ = np.abs(cos["fp32"] - cos["int8"]) >= 0.01  # (pairs,)
    disagreements = [Disagreement(f"line {p[3]}", f"{p[0]} ||| {p[1]}", (f"{p[2]:g}",), f"{a:.4f}", f"{b:.4f}",
                                  float(a), float(b))
                     for p, a, b, d in zip(pairs, cos["fp32"], cos["int8"], differ) if d]
    models = _model_evals(metrics, emb, len(unique))
    return EvalResult(
        task=data.task, data_path=data.path, examples=len(pairs), fp32=models["fp32"], int8=models["int8"],
        agreement=1 - len(disagreements) / len(pairs), disagreements=tuple(disagreements[:MAX_DISAGREEMENTS]),
        n_disagreements=len(disagreements),
        details={"embedding_eval": "sts",
                 "agreement_means": "pairs whose cosine similarity differs by < 0.01 between FP32 and INT8",
                 "mean_cosine_fp32_int8": float(cosine(emb.vectors["fp32"], emb.vectors["int8"]).mean()),
                 "truncated_texts": emb.truncated, "max_tokens": emb.window})


def evaluate_embeddings(fp32_runner, int8_runner, data: RetrievalData | StsData, *, limit: int | None = None,
                        progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> EvalResult:
    """FP32 and INT8 on a BEIR folder (the first `limit` queries against the whole corpus, exact cosine search) or
    STS pairs (the first `limit`); mean_latency_ms is model time per embedded text."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit: must be at least 1 (got {limit})")
    _check_runners(fp32_runner, int8_runner, data)
    runners = {"fp32": fp32_runner, "int8": int8_runner}
    if isinstance(data, StsData):
        return _evaluate_sts(runners, data, limit, progress, cancel)
    return _evaluate_retrieval(runners, data, limit, progress, cancel)


# --- the plug-in ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddingResult:
    """One model's answer to a predict request: the texts' vectors, their similarities, and a ranking for a query."""

    texts: tuple[str, ...]
    vectors: np.ndarray  # (texts, dim)
    latency_ms: float  # model time per text
    query: str | None = None
    hits: tuple[Hit, ...] = ()  # texts ranked by similarity to the query, best first

    @property
    def similarity(self) -> np.ndarray:
        return cosine_matrix(self.vectors, self.vectors)  # (texts, texts)

    def to_dict(self) -> dict:
        out = {"embeddings": self.vectors.round(6).tolist(), "similarity": self.similarity.round(6).tolist(),
               "latency_ms": round(self.latency_ms, 3)}
        if self.query is not None:
            out["query"] = self.query
            out["ranking"] = [{"index": h.index, "score": h.score, "text": h.text} for h in self.hits]
        return out


class EmbeddingsTask(Task):
    name = "feature-extraction"
    title = "Sentence similarity / search"
    view = "search"
    hub_tags = ("sentence-similarity", "feature-extraction")
    architecture_suffixes = ("Model",)
    pretraining_suffixes = ("ForMaskedLM", "ForPreTraining")  # the encoder without its pre-training head
    output_names = ("token_embeddings", "sentence_embedding")
    metrics = {"ndcg@10": ("nDCG@10", 1.0), "recall@1": ("Recall@1", 1.0), "recall@10": ("Recall@10", 1.0),
               "mrr@10": ("MRR@10", 1.0), "spearman": ("Spearman", 1.0)}
    data_formats = "STS sentence pairs (*.tsv *.csv)"
    data_folders = "A BEIR retrieval folder"
    agreement_words = "same nearest neighbour"
    whole_set_agreement = True

    def head_config(self, folder: Path) -> Pooling:
        return read_pooling(folder)

    def build_head(self, builder, x: str) -> None:
        add_pooling(builder.g, x, "attention_mask", builder.head_config or Pooling(), builder.spec.hidden_size,
                    BATCH, SEQ)

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import QA_EXAMPLES, SENTENCES
        from app.core.eval import read_lines

        if path is None:  # sentences and questions, so neighbours are about the same thing
            texts = [*SENTENCES, *(q for _, questions in QA_EXAMPLES for q in questions), *(c for c, _ in QA_EXAMPLES)]
            return texts, f"built-in, {len(texts)} sentences"
        texts = read_lines(path)
        return texts, f"{Path(path).name}, {len(texts)} texts"

    def agreement(self, spec, reference, outputs, feeds):
        # A different neighbour that FP32 scores within 0.01 of its own best is a near-tie, not a changed answer.
        return guard_agreement(reference, outputs, tolerance=0.01)

    def check(self, request: PredictRequest) -> None:
        if not request.texts:
            raise InputError("Give --text (several for a similarity matrix; with --query, the texts to rank).")

    def predict(self, runner, request: PredictRequest) -> EmbeddingResult:
        texts = list(request.texts)
        vectors, ms = embed(runner, texts + ([request.query] if request.query is not None else []))
        if request.query is None:
            return EmbeddingResult(tuple(texts), vectors, float(np.mean(ms)))
        hits = rank(vectors[-1], vectors[:-1], texts, top_k=request.top_k)
        return EmbeddingResult(tuple(texts), vectors[:-1], float(np.mean(ms)), request.query, tuple(hits))

    def agree(self, fp32_result, int8_result) -> bool:
        if fp32_result.query is not None:
            return [h.index for h in fp32_result.hits[:1]] == [h.index for h in int8_result.hits[:1]]
        return bool(np.abs(fp32_result.similarity - int8_result.similarity).max() < 0.02)

    def result_json(self, result):
        return result.to_dict()

    def result_rows(self, fp32_result, int8_result):
        if fp32_result.query is not None:
            rows = [(f"#{i + 1}", *[f"{r.hits[i].score:.4f} {r.hits[i].text[:40]!r}"
                                    for r in (fp32_result, int8_result)]) for i in range(len(fp32_result.hits))]
        else:
            n = len(fp32_result.texts)
            rows = [(f"text {i + 1} ~ {j + 1}", *(f"{r.similarity[i, j]:.4f}" for r in (fp32_result, int8_result)))
                    for i in range(n) for j in range(i + 1, n)]
            if n == 1:
                rows = [("dimensions", str(fp32_result.vectors.shape[1]), str(int8_result.vectors.shape[1])),
                        ("cosine", "", f"{float(cosine_matrix(fp32_result.vectors, int8_result.vectors)[0, 0]):.4f}"
                                       " to FP32")]
        return rows + [("latency", f"{fp32_result.latency_ms:.1f} ms", f"{int8_result.latency_ms:.1f} ms")]

    def load_data(self, path: Path, **options):
        return load_embedding_data(path)

    def evaluate(self, fp32_runner, int8_runner, data, *, limit=None, progress=None, cancel=None):
        return evaluate_embeddings(fp32_runner, int8_runner, data, limit=limit, progress=progress, cancel=cancel)


TASK = EmbeddingsTask()
