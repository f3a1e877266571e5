"""The base builder of an encoder family: embeddings, post-norm transformer layers, task head.

A family module subclasses `EncoderFamily` and overrides the hooks that differ (DESIGN.md §8, §13):

  config.json ─ read_dims ─► ModelSpec            (hyper-parameter names, defaults)
  input_ids ─ embeddings (positions, token types) ─► layer × N ─► task.build_head(builder, x)
                                                      │
                                     block = attention ─ residual+LayerNorm ─ feed_forward ─ residual+LayerNorm
  weights: `prefix` + `layer_names` map our names to the checkpoint's

`fused=True` emits the fused ops directly, without tracing or pattern matching: ONNX Runtime's
MultiHeadAttention and BiasGelu/FastGelu contrib ops, and LayerNormalization after the residual Add. ONNX
Runtime's optimizer would fuse the residual into SkipLayerNormalization instead, but in ORT 1.32 on CPU that
kernel is ~3x slower than Add + LayerNormalization (measured: 156 vs 57 µs at 128 × 384), and it would hide the
LayerNorm's output from the quantizer, which scales outlier channels through the LayerNorm's gamma and beta.
The task head (what the graph outputs) belongs to the task plug-in (`app.core.tasks`), which calls back into
the family for family-specific parts such as `sequence_head`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from onnx import TensorProto

from app.core.errors import InvalidModelError
from app.core.export.checkpoint import Checkpoint
from app.core.export.graph import Graph

if TYPE_CHECKING:
    from app.core.spec import ModelSpec

# Encoder tensor names, relative to the base-model prefix ("bert.", ...).
BERT_LAYER = dict(layer="encoder.layer.{i}.", q="attention.self.query", k="attention.self.key",
                  v="attention.self.value", o="attention.output.dense", ln1="attention.output.LayerNorm",
                  ff1="intermediate.dense", ff2="output.dense", ln2="output.LayerNorm")
BERT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}
_FLOAT_MIN = float(np.finfo(np.float32).min)
BATCH, SEQ = "batch_size", "sequence_length"


class EncoderFamily:
    """BERT's layout; other families override class attributes and hooks."""

    # --- what the rest of the app reads (spec, tokenizer, Hub search) --------------------------------
    class_prefixes: ClassVar[dict[str, str]] = {"bert": "Bert"}  # model_type → transformers class-name prefix
    uses_token_types: ClassVar[bool] = True  # token_type_ids is a graph input
    default_pad_token_id: ClassVar[int] = 0
    special_tokens: ClassVar[dict[str, str]] = BERT_SPECIAL_TOKENS  # tokenizer defaults
    pair_sep_twice: ClassVar[bool] = False  # a vocab.txt pair is "<s> A </s></s> B </s>" (MPNet), not BERT's
    # --- weight names ---------------------------------------------------------------------------------
    prefix: ClassVar[str] = "bert."
    layer_names: ClassVar[dict[str, str]] = BERT_LAYER
    word_embeddings: ClassVar[str] = "embeddings.word_embeddings.weight"  # after `prefix`: finds the prefix in use
    # fused graphs use MultiHeadAttention; False keeps the plain attention ops (MPNet: faster with its bias)
    fused_attention: ClassVar[bool] = True

    @classmethod
    def has_token_types(cls, spec: ModelSpec) -> bool:
        """Whether this model's graph takes token_type_ids (DeBERTa decides per config)."""
        return cls.uses_token_types

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        """Hyper-parameters from config.json; `need(*keys, default=None)` returns the first present key or fails."""
        hidden = int(need("hidden_size"))
        return dict(hidden_size=hidden, embedding_size=int(config.get("embedding_size") or hidden),
                    num_layers=int(need("num_hidden_layers")), num_heads=int(need("num_attention_heads")),
                    intermediate_size=int(need("intermediate_size")),
                    type_vocab_size=int(config.get("type_vocab_size", 2)),
                    layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                    hidden_act=str(config.get("hidden_act", "gelu")))

    @classmethod
    def position_offset(cls, pad_token_id: int) -> int:
        """Where position ids start (RoBERTa: after padding_idx)."""
        return 0

    def __init__(self, spec: ModelSpec, ckpt: Checkpoint, *, opset: int = 17, fused: bool = False,
                 head_config=None):
        self.spec, self.ckpt, self.fused = spec, ckpt, fused
        self.head_config = head_config  # what the task read from the model folder (e.g. the pooling)
        self.g = Graph(spec.architecture, opset, contrib=fused)
        self.problems: list[str] = []
        candidates = [self.prefix, ""]
        found = [p for p in candidates if self._find(p + self.word_embeddings)]
        if not found:
            raise InvalidModelError(
                f"The weights have no '{candidates[0]}{self.word_embeddings}': they do not belong to a "
                f"{spec.model_type} model as config.json says. Re-download the model or fix config.json.")
        self.prefix = found[0]

    # --- tensors -------------------------------------------------------------------------------
    def _find(self, key: str) -> str | None:
        """The checkpoint's name for `key`, allowing the old TF-style LayerNorm gamma/beta names."""
        if key in self.ckpt:
            return key
        for new, old in ((".weight", ".gamma"), (".bias", ".beta")):
            if key.endswith(new) and key[: -len(new)] + old in self.ckpt:
                return key[: -len(new)] + old
        return None

    def tensor(self, key: str, shape: tuple[int, ...], *, transpose: bool = False) -> str:
        """Register a checkpoint tensor as a lazy initializer, after checking it exists with `shape`."""
        found = self._find(key)
        if found is None:
            self.problems.append(f"missing tensor {key} {list(shape)}")
            return key
        stored = self.ckpt.shape(found)
        expect = shape[::-1] if transpose else shape
        if stored != expect:
            self.problems.append(f"{found} has shape {list(stored)}, expected {list(expect)}")
            return key
        load = self.ckpt.load
        if transpose:
            fetch = lambda: load(found).T  # noqa: E731  (a MatMul takes [in, out]; Linear stores [out, in])
        else:
            fetch = lambda: load(found)  # noqa: E731
        return self.g.weight(key + (".T" if transpose else ""), shape, fetch)

    def combined(self, name: str, shape: tuple[int, ...], parts: list[str], build) -> str:
        """A lazy initializer computed from several checkpoint tensors (packed QKV, folded embeddings)."""
        keys = [self._find(p) for p in parts]
        if any(k is None for k in keys):
            self.problems.extend(f"missing tensor {p}" for p, k in zip(parts, keys) if k is None)
            return name
        load = self.ckpt.load
        return self.g.weight(name, shape, lambda: build(*[load(k) for k in keys]))

    # --- small blocks --------------------------------------------------------------------------
    def linear(self, x: str, key: str, d_in: int, d_out: int, path: str) -> str:
        #  x ─ MatMul(W[in,out]) ─ Add(b) ─►
        w = self.tensor(key + ".weight", (d_in, d_out), transpose=True)
        b = self.tensor(key + ".bias", (d_out,))
        return self.g.node("Add", [self.g.node("MatMul", [x, w], path + "/MatMul"), b], path + "/Add")

    def layer_norm(self, x: str, key: str, dim: int, path: str) -> str:
        gamma, beta = self.tensor(key + ".weight", (dim,)), self.tensor(key + ".bias", (dim,))
        return self.g.node("LayerNormalization", [x, gamma, beta], path, axis=-1, epsilon=self.spec.layer_norm_eps)

    def activation(self, x: str, kind: str, path: str) -> str:
        g = self.g
        if kind == "relu":
            return g.node("Relu", [x], path + "/Relu")
        if kind == "tanh":
            return g.node("Tanh", [x], path + "/Tanh")
        if kind == "gelu":
            #  x ─┬─ Div(√2) ─ Erf ─ Add(1) ─┐
            #     └─ Mul(0.5) ───────────────┴─ Mul ─►   exact GELU, as torch.nn.functional.gelu
            erf = g.node("Erf", [g.node("Div", [x, g.const(math.sqrt(2.0), np.float32)], path + "/Div")], path + "/Erf")
            half = g.node("Mul", [x, g.const(0.5, np.float32)], path + "/Mul_half")
            return g.node("Mul", [half, g.node("Add", [erf, g.const(1.0, np.float32)], path + "/Add_one")], path + "/Mul")
        # gelu_new / gelu_pytorch_tanh / gelu_fast: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        cube = g.node("Mul", [g.node("Mul", [x, x], path + "/Sq"), x], path + "/Cube")
        inner = g.node("Add", [x, g.node("Mul", [cube, g.const(0.044715, np.float32)], path + "/MulC")], path + "/Inner")
        tanh = g.node("Tanh", [g.node("Mul", [inner, g.const(math.sqrt(2 / math.pi), np.float32)], path + "/MulS")],
                      path + "/Tanh")
        half = g.node("Mul", [x, g.const(0.5, np.float32)], path + "/Mul_half")
        return g.node("Mul", [half, g.node("Add", [tanh, g.const(1.0, np.float32)], path + "/Add_one")], path + "/Mul")

    # --- embeddings ----------------------------------------------------------------------------
    def positions(self, input_ids: str) -> tuple[str, str]:
        """(position ids, position table) for the embeddings."""
        #  Shape(ids)[1] ─ Range(0, S) ─► positions [S]
        s, g = self.spec, self.g
        seq = g.node("Gather", [g.node("Shape", [input_ids], "/embeddings/positions/Shape"), g.const(1)],
                     "/embeddings/positions/Gather", axis=0)
        positions = g.node("Range", [g.const(0), seq, g.const(1)], "/embeddings/positions/Range")
        table = self.tensor(self.prefix + "embeddings.position_embeddings.weight",
                            (s.max_position_embeddings, s.embedding_size))
        return positions, table

    def embeddings(self, input_ids: str, token_type_ids: str | None) -> str:
        #  ... ─ LayerNorm ─►
        return self.layer_norm(self.summed_embeddings(input_ids, token_type_ids), self.prefix + "embeddings.LayerNorm",
                               self.spec.embedding_size, "/embeddings/LayerNorm")

    def summed_embeddings(self, input_ids: str, token_type_ids: str | None, *, positions: bool = True) -> str:
        #  input_ids ─ Gather(word) ─┐
        #  positions ─ Gather(pos) ──┼─ Add ─►     (`positions`: absolute position embeddings are added)
        #  token_type_ids ─ Gather ──┘
        s, g, p = self.spec, self.g, self.prefix + "embeddings."
        e = s.embedding_size
        x = g.node("Gather", [self.tensor(p + "word_embeddings.weight", (s.vocab_size, e)), input_ids],
                   "/embeddings/word_embeddings/Gather")
        if positions:
            ids, table = self.positions(input_ids)
            x = g.node("Add", [x, g.node("Gather", [table, ids], "/embeddings/position_embeddings/Gather")],
                       "/embeddings/Add_positions")
        if token_type_ids is not None:
            types = g.node("Gather", [self.tensor(p + "token_type_embeddings.weight", (s.type_vocab_size, e)),
                                      token_type_ids], "/embeddings/token_type_embeddings/Gather")
            x = g.node("Add", [x, types], "/embeddings/Add_token_types")
        return x

    def _check_shape(self, key: str, shape: tuple[int, ...]) -> None:
        found = self._find(key)
        if found is not None and self.ckpt.shape(found) != shape:
            self.problems.append(f"{found} has shape {list(self.ckpt.shape(found))}, expected {list(shape)}")

    # --- encoder layers ------------------------------------------------------------------------
    def attention_mask_bias(self, attention_mask: str) -> str:
        #  mask ─ Cast ─ Sub(1, ·) ─ Mul(float32 min) ─ Unsqueeze[1,2] ─► [B,1,1,S] additive bias
        g = self.g
        if self.fused and self.fused_attention:  # the contrib attention op takes the raw 0/1 mask as key padding
            return g.node("Cast", [attention_mask], "/encoder/mask/Cast", to=TensorProto.INT32)
        m = g.node("Cast", [attention_mask], "/encoder/mask/Cast", to=TensorProto.FLOAT)
        inv = g.node("Sub", [g.const(1.0, np.float32), m], "/encoder/mask/Sub")
        bias = g.node("Mul", [inv, g.const(_FLOAT_MIN, np.float32)], "/encoder/mask/Mul")
        return g.node("Unsqueeze", [bias, g.const([1, 2])], "/encoder/mask/Unsqueeze")

    def block(self, x: str, mask: str, i: int) -> str:
        """One post-norm transformer layer."""
        #  x ─ attention ─ Linear(o) ─ Add(x) ─ LayerNorm ─ feed_forward ─ Linear(ff2) ─ Add ─ LayerNorm ─►
        s, n = self.spec, self.layer_names
        key = self.prefix + n["layer"].format(i=i)
        path = f"/encoder/layer.{i}"
        h = s.hidden_size
        ctx = self.attention(x, mask, key, path)
        x = self._residual_layer_norm(ctx, x, key + n["o"], key + n["ln1"], h, h, f"{path}/attention")
        inner = self.feed_forward(x, key, path)
        return self._residual_layer_norm(inner, x, key + n["ff2"], key + n["ln2"], s.intermediate_size, h,
                                         f"{path}/ffn")

    def attention(self, x: str, mask: str, key: str, path: str) -> str:
        """Self-attention up to (not including) the output projection: the merged heads' context."""
        if self.fused and self.fused_attention:
            return self._fused_attention(x, mask, key, path)
        #  x ─ q,k,v Linear ─ split heads ─ MatMul(q,kᵀ)·1/√d + mask ─ Softmax ─ MatMul(v) ─ merge heads ─►
        s, g, n = self.spec, self.g, self.layer_names
        h, heads = s.hidden_size, s.num_heads
        d = h // heads
        split = g.const([0, 0, heads, d])

        def heads_of(name: str, perm: list[int]) -> str:
            y = self.linear(x, key + n[name], h, h, f"{path}/attention/{name}")
            y = g.node("Reshape", [y, split], f"{path}/attention/{name}/Reshape")
            return g.node("Transpose", [y], f"{path}/attention/{name}/Transpose", perm=perm)

        q, k, v = heads_of("q", [0, 2, 1, 3]), heads_of("k", [0, 2, 3, 1]), heads_of("v", [0, 2, 1, 3])
        scores = g.node("MatMul", [q, k], f"{path}/attention/scores/MatMul")
        scores = g.node("Mul", [scores, g.const(1.0 / math.sqrt(d), np.float32)], f"{path}/attention/scores/Mul")
        scores = g.node("Add", [scores, mask], f"{path}/attention/scores/Add_mask")
        probs = g.node("Softmax", [scores], f"{path}/attention/Softmax", axis=-1)
        ctx = g.node("MatMul", [probs, v], f"{path}/attention/context/MatMul")
        ctx = g.node("Transpose", [ctx], f"{path}/attention/context/Transpose", perm=[0, 2, 1, 3])
        return g.node("Reshape", [ctx, g.const([0, 0, h])], f"{path}/attention/context/Reshape")

    def packed_qkv(self, key: str) -> tuple[str, str]:
        """The layer's Q, K and V Linears as one (hidden, 3 × hidden) weight and one (3 × hidden,) bias."""
        h, n = self.spec.hidden_size, self.layer_names
        parts = [key + n[p] + ".weight" for p in "qkv"]
        for p in parts:
            self._check_shape(p, (h, h))
        w_qkv = self.combined(f"{key}attention.qkv.weight", (h, 3 * h), parts,
                              lambda q, k, v: np.concatenate([q.T, k.T, v.T], axis=1))
        b_qkv = self.combined(f"{key}attention.qkv.bias", (3 * h,), [key + n[p] + ".bias" for p in "qkv"],
                              lambda q, k, v: np.concatenate([q, k, v]))
        return w_qkv, b_qkv

    def _fused_attention(self, x: str, mask: str, key: str, path: str) -> str:
        #  x ─ MatMul(Wqkv) ─ Split ─ MultiHeadAttention(+bqkv, mask) ─►
        s, g = self.spec, self.g
        w_qkv, b_qkv = self.packed_qkv(key)
        # The QKV projection stays a plain MatMul so quantization can treat its input's outlier channels.
        qkv = g.node("MatMul", [x, w_qkv], f"{path}/attention/qkv/MatMul")
        q, k, v = g.node("Split", [qkv], f"{path}/attention/qkv/Split", outputs=3, axis=-1)
        return g.node("MultiHeadAttention", [q, k, v, b_qkv, mask], f"{path}/attention/MultiHeadAttention",
                      domain="com.microsoft", num_heads=s.num_heads)

    def feed_forward(self, x: str, key: str, path: str) -> str:
        """The first feed-forward Linear and its activation (the second Linear is the residual block's)."""
        s, g, n = self.spec, self.g, self.layer_names
        h, ff = s.hidden_size, s.intermediate_size
        if not self.fused:
            return self.activation(self.linear(x, key + n["ff1"], h, ff, f"{path}/ffn/in"), s.hidden_act,
                                   f"{path}/ffn/act")
        #  x ─ MatMul(W1) ─ BiasGelu(b1) / Add + Relu / FastGelu(b1) ─►
        w1 = self.tensor(key + n["ff1"] + ".weight", (h, ff), transpose=True)
        b1 = self.tensor(key + n["ff1"] + ".bias", (ff,))
        inner = g.node("MatMul", [x, w1], f"{path}/ffn/in/MatMul")
        if s.hidden_act == "gelu":
            return g.node("BiasGelu", [inner, b1], f"{path}/ffn/BiasGelu", domain="com.microsoft")
        if s.hidden_act == "relu":
            return g.node("Relu", [g.node("Add", [inner, b1], f"{path}/ffn/in/Add")], f"{path}/ffn/Relu")
        return g.node("FastGelu", [inner, b1], f"{path}/ffn/FastGelu", domain="com.microsoft")

    def _residual_layer_norm(self, y: str, skip: str, linear: str, norm: str, d_in: int, d_out: int,
                             path: str) -> str:
        #  y ─ Linear ─ Add(skip) ─ LayerNorm ─►
        y = self.linear(y, linear, d_in, d_out, path + "/output")
        return self.layer_norm(self.g.node("Add", [y, skip], path + "/Add_residual"), norm, d_out,
                               path + "/LayerNorm")

    # --- heads (called by the task plug-ins) ----------------------------------------------------
    def sequence_head(self, cls: str, num_labels: int) -> str:
        """[B, H] first-token states → [B, labels] logits: BERT's pooler (dense + tanh), then the classifier."""
        h = self.spec.hidden_size
        pooled = self.activation(self.linear(cls, self.prefix + "pooler.dense", h, h, "/pooler"), "tanh",
                                 "/pooler/act")
        return self.linear(pooled, "classifier", h, num_labels, "/classifier")

    def dense_head(self, cls: str, num_labels: int, activation: str) -> str:
        """RoBERTa's and ELECTRA's classification head: dense + activation, then out_proj."""
        h = self.spec.hidden_size
        dense = self.activation(self.linear(cls, "classifier.dense", h, h, "/classifier/dense"), activation,
                                "/classifier/act")
        return self.linear(dense, "classifier.out_proj", h, num_labels, "/classifier/out_proj")

    def check_problems(self) -> None:
        """Every missing or mis-shaped tensor found while building, in one error (after the whole graph is built)."""
        if self.problems:
            shown = "\n  ".join(self.problems[:12]) + (f"\n  ... and {len(self.problems) - 12} more"
                                                        if len(self.problems) > 12 else "")
            raise InvalidModelError(f"The weights do not match config.json ({self.spec.architecture}):\n  {shown}\n"
                                    "Re-download the model, or check that config.json belongs to these weights.")

    def build(self) -> Graph:
        from app.core.tasks import get_task

        s, g = self.spec, self.g
        ids = g.input("input_ids", TensorProto.INT64, [BATCH, SEQ])
        mask = g.input("attention_mask", TensorProto.INT64, [BATCH, SEQ])
        types = g.input("token_type_ids", TensorProto.INT64, [BATCH, SEQ]) if "token_type_ids" in s.input_names else None
        x = self.embeddings(ids, types)
        bias = self.attention_mask_bias(mask)
        for i in range(s.num_layers):
            x = self.block(x, bias, i)
        get_task(s.task).build_head(self, x)
        self.check_problems()
        return g
