"""Sentence embeddings: sentence-transformers' pooling (and normalisation) inside the ONNX graph.

  last hidden state ─┬──────────────────────────────────────────────► token_embeddings [B, S, H]
                     └─ pool (mean / cls / max / lasttoken, masked) ─ [L2 normalise] ─► sentence_embedding [B, H]

`read_pooling(folder)` reads `modules.json`, `1_Pooling/config.json` and `2_Normalize`; a plain encoder
without them gets mean pooling, and says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from onnx import TensorProto

from app.core.errors import InputError
from app.core.export.families.base import BATCH, SEQ
from app.core.tasks.base import PredictRequest, Task

PoolingMode = Literal["mean", "cls", "max", "lasttoken"]


@dataclass(frozen=True)
class Pooling:
    mode: PoolingMode = "mean"
    normalize: bool = False
    include_prompt: bool = True
    configured: bool = False  # False: the folder has no sentence-transformers files; mean pooling by default

    def describe(self) -> str:
        how = f"{self.mode} pooling" + (", L2-normalised" if self.normalize else "")
        return how if self.configured else f"{how} (no sentence-transformers pooling config: the default)"

    def to_dict(self) -> dict:
        return asdict(self)


def read_pooling(folder: Path) -> Pooling:
    """The pooling a sentence-transformers folder declares; mean pooling for a plain encoder."""
    folder = Path(folder)
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return Pooling()
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    mode, normalize, include_prompt = "mean", False, True
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            config = json.loads((folder / module.get("path", "1_Pooling") / "config.json").read_text(encoding="utf-8"))
            for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                              ("pooling_mode_lasttoken", "lasttoken"), ("pooling_mode_mean_tokens", "mean")):
                if config.get(key):
                    mode = name
                    break
            include_prompt = bool(config.get("include_prompt", True))
        elif kind.endswith("Normalize"):
            normalize = True
    return Pooling(mode=mode, normalize=normalize, include_prompt=include_prompt, configured=True)


def add_pooling(g, x: str, attention_mask: str, pooling: Pooling, hidden: int, batch: str, seq: str) -> None:
    """Emit the graph outputs `token_embeddings` and `sentence_embedding` from the encoder output `x`."""
    g.output(x, "token_embeddings", [batch, seq, hidden])
    m = g.node("Unsqueeze", [g.node("Cast", [attention_mask], "/pooling/mask/Cast", to=TensorProto.FLOAT),
                             g.const([-1])], "/pooling/mask/Unsqueeze")  # [B, S, 1]
    summed = g.node("ReduceSum", [g.node("Mul", [x, m], "/pooling/Mul"), g.const([1])], "/pooling/ReduceSum",
                    keepdims=0)
    count = g.node("Max", [g.node("ReduceSum", [m, g.const([1])], "/pooling/count", keepdims=0),
                           g.const(1e-9, np.float32)], "/pooling/count/Clip")
    pooled = g.node("Div", [summed, count], "/pooling/Div")
    g.output(pooled, "sentence_embedding", [batch, hidden])


def embed(runner, texts):
    raise NotImplementedError


def cosine_matrix(a, b):
    raise NotImplementedError


def rank(*a, **k):
    raise NotImplementedError


@dataclass(frozen=True)
class Hit:
    index: int
    score: float
    text: str


def guard_agreement(reference, outputs):
    from app.core.tasks.base import cosine

    c = [float(cosine(r["sentence_embedding"], o["sentence_embedding"]).mean()) for r, o in zip(reference, outputs)]
    return [x >= 0.99 for x in c], c


def load_embedding_data(path):
    raise NotImplementedError


def evaluate_embeddings(*a, **k):
    raise NotImplementedError


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
    agreement_words = "same nearest neighbour"
    whole_set_agreement = True

    def head_config(self, folder: Path) -> Pooling:
        return read_pooling(folder)

    def build_head(self, builder, x: str) -> None:
        add_pooling(builder.g, x, "attention_mask", builder.head_config or Pooling(), builder.spec.hidden_size,
                    BATCH, SEQ)

    def calibration_examples(self, path: Path | None) -> tuple[list, str]:
        from app.core.calibration import QA_EXAMPLES, SENTENCES
        from app.core.tasks.classification import read_lines

        if path is None:  # sentences and questions, so neighbours are about the same thing
            texts = list(SENTENCES) + [q for _, questions in QA_EXAMPLES for q in questions] + [c for c, _ in QA_EXAMPLES]
            return texts, f"built-in, {len(texts)} sentences"
        texts = read_lines(path)
        return texts, f"{Path(path).name}, {len(texts)} texts"

    def calibration_feeds(self, tokenizer, spec, examples: list, max_length: int) -> list[dict]:
        return [tokenizer.batch([t], max_length=max_length)[0].feeds(spec.input_names) for t in examples]

    def agreement(self, spec, reference, outputs, feeds):
        return guard_agreement(reference, outputs)

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
            rows = [(f"#{i + 1}", *[f"{r.hits[i].score:.4f} {r.hits[i].text[:40]!r}" for r in (fp32_result, int8_result)])
                    for i in range(len(fp32_result.hits))]
        else:
            n = len(fp32_result.texts)
            rows = [(f"text {i + 1} ~ {j + 1}", f"{fp32_result.similarity[i, j]:.4f}", f"{int8_result.similarity[i, j]:.4f}")
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
