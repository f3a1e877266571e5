"""DeBERTa-v2 and DeBERTa-v3: disentangled attention over relative positions, no absolute positions by default.

What differs from BERT (transformers' `modeling_deberta_v2`):

  input_ids ─ Gather(word) [+ positions when position_biased_input] [+ token types when type_vocab_size > 0]
            ─ [embed_proj] ─ LayerNorm ─ Mul(mask) ─► layers (BERT's post-norm block, q/k/v under *_proj names)

  attention scores = (q·kᵀ + c2p + p2c) / √(d·scale_factor)     scale_factor = 1 + |{c2p, p2c}|
     c2p[i, j] = q_i · pos_key[c(i, j)]        content → position
     p2c[i, j] = k_j · pos_query[c(i, j)]      position → content
     c(i, j)   = clamp(k_span + bucket(i - j), 0, 2·k_span - 1)   bucket: log buckets past position_buckets / 2

pos_key / pos_query are the relative embeddings (after their LayerNorm when `norm_rel_ebd` says so) through
the key and query projections (`share_att_key`) or their own `pos_key_proj` / `pos_query_proj`. They do not depend
on the input, so they are computed here once, at export, already divided by the scale, as one [2·k_span, H]
table per layer and kind: the graph gathers only the rows a sequence of its length can reach, and the quantizer
sees them as tables (int8 per row), never as MatMuls sharing the projections' weights (its outlier rewrites scale
and zero weight rows in place). The bucket table c(r) for every r is computed here in float32, as torch does.
Sequence classification: `ContextPooler` (dense + pooler_hidden_act on the first token), then the classifier.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from app.core.errors import UnsupportedModelError
from app.core.export.families.base import _FLOAT_MIN, BERT_SPECIAL_TOKENS, EncoderFamily

DEBERTA_LAYER = dict(layer="encoder.layer.{i}.", q="attention.self.query_proj", k="attention.self.key_proj",
                     v="attention.self.value_proj", o="attention.output.dense", ln1="attention.output.LayerNorm",
                     ff1="intermediate.dense", ff2="output.dense", ln2="output.LayerNorm")
_POOLER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh")


def log_bucket_positions(relative: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """transformers' `make_log_bucket_position`, op by op in float32 (the results are integers)."""
    relative = relative.astype(np.int64)
    mid = bucket_size // 2
    abs_pos = np.where((relative < mid) & (relative > -mid), mid - 1, np.abs(relative))
    ratio = np.log(abs_pos.astype(np.float32) / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, relative, (log_pos * np.sign(relative)).astype(np.int64))


class DebertaV2(EncoderFamily):
    class_prefixes = {"deberta-v2": "DebertaV2"}
    special_tokens = BERT_SPECIAL_TOKENS
    prefix = "deberta."
    layer_names = DEBERTA_LAYER
    _relative: tuple[str, str] | None = None  # built once per graph by _relative_index

    @classmethod
    def has_token_types(cls, spec) -> bool:
        return spec.type_vocab_size > 0  # v3 has none: then no token_type_ids input at all

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        dims = super().read_dims(config, need)
        dims["type_vocab_size"] = int(config.get("type_vocab_size", 0))
        dims["layer_norm_eps"] = float(config.get("layer_norm_eps", 1e-7))
        heads, hidden = dims["num_heads"], dims["hidden_size"]
        pos_att_type = config.get("pos_att_type") or []
        if isinstance(pos_att_type, str):
            pos_att_type = [p.strip() for p in pos_att_type.lower().split("|")]
        unknown = [p for p in pos_att_type if p not in ("c2p", "p2c")]
        relative = bool(config.get("relative_attention", False))
        max_relative = int(config.get("max_relative_positions", -1))
        if max_relative < 1:
            max_relative = int(config.get("max_position_embeddings", 512))
        options = dict(
            relative_attention=relative, pos_att_type=[p for p in ("c2p", "p2c") if p in pos_att_type],
            position_buckets=int(config.get("position_buckets", -1)), max_relative_positions=max_relative,
            share_att_key=bool(config.get("share_att_key", False)),
            norm_rel_ebd=[p.strip() for p in str(config.get("norm_rel_ebd", "none")).lower().split("|")],
            position_biased_input=bool(config.get("position_biased_input", True)),
            pooler_hidden_act=str(config.get("pooler_hidden_act", "gelu")))
        refuse = []
        if unknown:
            refuse.append(f"pos_att_type {unknown} (known: c2p, p2c)")
        if int(config.get("conv_kernel_size", 0) or 0) > 0:
            refuse.append(f"the convolution layer of DeBERTa-v2 xlarge/xxlarge (conv_kernel_size "
                          f"{config['conv_kernel_size']})")
        head_size = config.get("attention_head_size")
        if head_size is not None and int(head_size) * heads != hidden:
            refuse.append(f"attention_head_size {head_size} x {heads} heads != hidden size {hidden}")
        if int(config.get("pooler_hidden_size", hidden)) != hidden:
            refuse.append(f"pooler_hidden_size {config['pooler_hidden_size']} != hidden size {hidden}")
        if options["pooler_hidden_act"] not in _POOLER_ACTIVATIONS:
            refuse.append(f"pooler_hidden_act {options['pooler_hidden_act']!r}")
        if refuse:
            raise UnsupportedModelError(f"This DeBERTa-v2 config uses {'; '.join(refuse)}, which Pocket NLP does "
                                        "not convert. DeBERTa-v3 (xsmall, small, base, large) and DeBERTa-v2 "
                                        "without the convolution layer are supported.")
        return dims | {"options": options}

    # --- embeddings ----------------------------------------------------------------------------
    def embeddings(self, input_ids: str, token_type_ids: str | None) -> str:
        #  input_ids ─ Gather(word) ─┬─ [Add(Gather(pos))] ─ [Add(Gather(types))] ─ [embed_proj] ─ LayerNorm ─┐
        #  attention_mask ─ Cast ─ Unsqueeze(-1) ──────────────────────────────────────────────── Mul ◄┘─►
        s, g, p = self.spec, self.g, self.prefix + "embeddings."
        x = self.summed_embeddings(input_ids, token_type_ids, positions=s.options["position_biased_input"])
        if s.embedding_size != s.hidden_size:
            w = self.tensor(p + "embed_proj.weight", (s.embedding_size, s.hidden_size), transpose=True)
            x = g.node("MatMul", [x, w], "/embeddings/embed_proj/MatMul")
        x = self.layer_norm(x, p + "LayerNorm", s.hidden_size, "/embeddings/LayerNorm")
        mask = g.node("Cast", [g.node("Unsqueeze", ["attention_mask", g.const([-1])], "/embeddings/mask/Unsqueeze")],
                      "/embeddings/mask/Cast", to=TensorProto.FLOAT)
        return g.node("Mul", [x, mask], "/embeddings/mask/Mul")

    # --- relative positions --------------------------------------------------------------------
    @property
    def _span(self) -> int:
        o = self.spec.options
        return o["position_buckets"] if o["position_buckets"] > 0 else o["max_relative_positions"]

    @property
    def _scale(self) -> float:
        return math.sqrt((self.spec.hidden_size // self.spec.num_heads) * (1 + len(self.spec.options["pos_att_type"])))

    def _uses_relative(self) -> bool:
        return self.spec.options["relative_attention"] and bool(self.spec.options["pos_att_type"])

    def _plain_fused(self) -> bool:
        """BERT's fused attention fits: no relative terms and the plain 1/√d scale."""
        return self.fused and not self.spec.options["pos_att_type"]

    def _relative_index(self) -> tuple[str, str]:
        """Once per graph: c(i, j) - lo [S, S] and the rows lo..hi [W] of the position tables that c reaches."""
        if self._relative is not None:
            return self._relative
        #  S ─ Range ─ Sub(outer) ─ Add(P-1) ─ Gather(c table) ─► c(i, j) [S, S]
        #  c table at ±(S-1) ─► lo, hi ─ Range ─► rows [W];  c(i, j) - lo ─► index into the W gathered rows
        s, g, o = self.spec, self.g, self.spec.options
        p, span = s.max_position_embeddings, self._span
        r = np.arange(-(p - 1), p, dtype=np.int64)  # every relative position a sequence of at most P tokens has
        if o["position_buckets"] > 0:
            r = log_bucket_positions(r, o["position_buckets"], o["max_relative_positions"])
        table = g.const(np.clip(r + span, 0, 2 * span - 1), np.int64)
        path = "/encoder/rel_pos"
        seq = g.node("Gather", [g.node("Shape", ["input_ids"], f"{path}/Shape"), g.const(1)], f"{path}/Gather_seq",
                     axis=0)
        ids = g.node("Range", [g.const(0), seq, g.const(1)], f"{path}/Range")
        rel = g.node("Sub", [g.node("Unsqueeze", [ids, g.const([1])], f"{path}/Unsqueeze_q"),
                             g.node("Unsqueeze", [ids, g.const([0])], f"{path}/Unsqueeze_k")], f"{path}/Sub")
        index = g.node("Gather", [table, g.node("Add", [rel, g.const(p - 1)], f"{path}/Add_offset")],
                       f"{path}/Gather_bucket", axis=0)  # [S, S]
        lo = g.node("Gather", [table, g.node("Sub", [g.const(p), seq], f"{path}/Sub_lo")], f"{path}/Gather_lo", axis=0)
        hi = g.node("Gather", [table, g.node("Add", [seq, g.const(p - 2)], f"{path}/Add_hi")], f"{path}/Gather_hi",
                    axis=0)
        rows = g.node("Range", [lo, g.node("Add", [hi, g.const(1)], f"{path}/Add_one"), g.const(1)],
                      f"{path}/Range_rows")
        self._relative = g.node("Sub", [index, lo], f"{path}/Sub_window"), rows
        return self._relative

    def _position_table(self, key: str, kind: str, path: str, rows: str) -> str:
        """[N, W, d] pos_key or pos_query rows for the window: projected relative embeddings / the scale."""
        #  table [2·span, H] (computed at export) ─ Gather(rows) ─ Reshape [W, N, d] ─ Transpose ─► [N, W, d]
        s, g, o = self.spec, self.g, self.spec.options
        h, heads, span = s.hidden_size, s.num_heads, self._span
        enc = self.prefix + "encoder."
        proj = key + (self.layer_names[kind] if o["share_att_key"] else
                      {"k": "attention.self.pos_key_proj", "q": "attention.self.pos_query_proj"}[kind])
        parts = [enc + "rel_embeddings.weight", proj + ".weight", proj + ".bias"]
        norm = "layer_norm" in o["norm_rel_ebd"]
        if norm:
            parts += [enc + "LayerNorm.weight", enc + "LayerNorm.bias"]
        self._check_shape(enc + "rel_embeddings.weight", (2 * span, h))
        eps, scale = s.layer_norm_eps, self._scale

        def build(rel, w, b, *gamma_beta):
            rel = rel[: 2 * span].astype(np.float64)
            if gamma_beta:
                mean = rel.mean(-1, keepdims=True)
                rel = (rel - mean) / np.sqrt(((rel - mean) ** 2).mean(-1, keepdims=True) + eps)
                rel = rel * gamma_beta[0] + gamma_beta[1]
            return ((rel @ w.T.astype(np.float64) + b) / scale).astype(np.float32)

        name = f"{proj}.relative_{'key' if kind == 'k' else 'query'}_table"
        table = self.combined(name, (2 * span, h), parts, build)
        x = g.node("Gather", [table, rows], f"{path}/pos_{kind}/Gather", axis=0)
        x = g.node("Reshape", [x, g.const([-1, heads, h // heads])], f"{path}/pos_{kind}/Reshape")
        return g.node("Transpose", [x], f"{path}/pos_{kind}/Transpose", perm=[1, 0, 2])

    def _relative_bias(self, q: str, k_t: str, key: str, path: str) -> str:
        """c2p + p2c, already scaled: [B, N, S, S]. q [B, N, S, d], k_t [B, N, d, S]."""
        #  q ─ MatMul(pos_keyᵀ) [B,N,S,W] ─ GatherElements(axis 3, c) ──────────┐
        #  pos_query [N,W,d] ─ MatMul(kᵀ) [B,N,W,S] ─ GatherElements(axis 2, c) ─┴─ Add ─►
        g, o = self.g, self.spec.options
        index, rows = self._relative_index()
        p = f"{path}/attention/rel"
        terms = []
        # The index, broadcast to [B, N, S, S]: the batch and head axes of q's shape, then S, S.
        q_shape = g.node("Shape", [q], f"{p}/Shape")
        shape = g.node("Concat", [g.node("Slice", [q_shape, g.const([0]), g.const([3])], f"{p}/Slice_bns"),
                                  g.node("Slice", [q_shape, g.const([2]), g.const([3])], f"{p}/Slice_s")],
                       f"{p}/Concat", axis=0)
        full = g.node("Expand", [index, shape], f"{p}/Expand")
        if "c2p" in o["pos_att_type"]:
            pos_k = g.node("Transpose", [self._position_table(key, "k", p, rows)], f"{p}/pos_k/Transpose_t",
                           perm=[0, 2, 1])  # [N, d, W]
            c2p = g.node("MatMul", [q, pos_k], f"{p}/c2p/MatMul")
            terms.append(g.node("GatherElements", [c2p, full], f"{p}/c2p/GatherElements", axis=3))
        if "p2c" in o["pos_att_type"]:
            p2c = g.node("MatMul", [self._position_table(key, "q", p, rows), k_t], f"{p}/p2c/MatMul")
            terms.append(g.node("GatherElements", [p2c, full], f"{p}/p2c/GatherElements", axis=2))
        return terms[0] if len(terms) == 1 else g.node("Add", terms, f"{p}/Add")

    # --- attention -----------------------------------------------------------------------------
    def attention_mask_bias(self, attention_mask: str) -> str:
        #  mask ─ Cast ─ Sub(1, ·) ─ Mul(float32 min) ─ Unsqueeze[1,2] ─► [B,1,1,S] additive bias (fused too:
        #  it is added to the relative bias that MultiHeadAttention takes)
        g = self.g
        if self._plain_fused():
            return super().attention_mask_bias(attention_mask)
        m = g.node("Cast", [attention_mask], "/encoder/mask/Cast", to=TensorProto.FLOAT)
        bias = g.node("Mul", [g.node("Sub", [g.const(1.0, np.float32), m], "/encoder/mask/Sub"),
                              g.const(_FLOAT_MIN, np.float32)], "/encoder/mask/Mul")
        return g.node("Unsqueeze", [bias, g.const([1, 2])], "/encoder/mask/Unsqueeze")

    def _heads(self, y: str, path: str, perm: list[int]) -> str:
        s, g = self.spec, self.g
        y = g.node("Reshape", [y, g.const([0, 0, s.num_heads, s.hidden_size // s.num_heads])], path + "/Reshape")
        return g.node("Transpose", [y], path + "/Transpose", perm=perm)

    def attention(self, x: str, mask: str, key: str, path: str) -> str:
        if self._plain_fused():
            return super().attention(x, mask, key, path)
        if self.fused and self._uses_relative():
            return self._fused_relative_attention(x, mask, key, path)
        return self._attention(x, mask, key, path)

    def _attention(self, x: str, mask: str, key: str, path: str) -> str:
        #  x ─ q,k,v Linear ─ heads ─ MatMul(q,kᵀ)/√(d·sf) [+ c2p + p2c] + mask ─ Softmax ─ MatMul(v) ─ merge ─►
        s, g, n = self.spec, self.g, self.layer_names
        h = s.hidden_size
        a = f"{path}/attention"
        q = self._heads(self.linear(x, key + n["q"], h, h, f"{a}/q"), f"{a}/q", [0, 2, 1, 3])
        k_t = self._heads(self.linear(x, key + n["k"], h, h, f"{a}/k"), f"{a}/k", [0, 2, 3, 1])
        v = self._heads(self.linear(x, key + n["v"], h, h, f"{a}/v"), f"{a}/v", [0, 2, 1, 3])
        scores = g.node("Mul", [g.node("MatMul", [q, k_t], f"{a}/scores/MatMul"), g.const(1 / self._scale, np.float32)],
                        f"{a}/scores/Mul")
        if self._uses_relative():
            scores = g.node("Add", [scores, self._relative_bias(q, k_t, key, path)], f"{a}/scores/Add_relative")
        scores = g.node("Add", [scores, mask], f"{a}/scores/Add_mask")
        probs = g.node("Softmax", [scores], f"{a}/Softmax", axis=-1)
        ctx = g.node("Transpose", [g.node("MatMul", [probs, v], f"{a}/context/MatMul")], f"{a}/context/Transpose",
                     perm=[0, 2, 1, 3])
        return g.node("Reshape", [ctx, g.const([0, 0, h])], f"{a}/context/Reshape")

    def _fused_relative_attention(self, x: str, mask: str, key: str, path: str) -> str:
        #  x ─ MatMul(Wqkv) ─ Add(bqkv) ─ Split ─ q, k, v ─ MultiHeadAttention(scale 1/√(d·sf), bias = rel + mask) ─►
        #                                          q, k ─ heads ─ c2p + p2c ─ Add(mask) ─┘
        s, g = self.spec, self.g
        a = f"{path}/attention"
        w_qkv, b_qkv = self.packed_qkv(key)
        qkv = g.node("Add", [g.node("MatMul", [x, w_qkv], f"{a}/qkv/MatMul"), b_qkv], f"{a}/qkv/Add")
        q, k, v = g.node("Split", [qkv], f"{a}/qkv/Split", outputs=3, axis=-1)
        bias = self._relative_bias(self._heads(q, f"{a}/q", [0, 2, 1, 3]), self._heads(k, f"{a}/k", [0, 2, 3, 1]),
                                   key, path)
        bias = g.node("Add", [bias, mask], f"{a}/rel/Add_mask")
        return g.node("MultiHeadAttention", [q, k, v, "", "", bias], f"{a}/MultiHeadAttention", domain="com.microsoft",
                      num_heads=s.num_heads, scale=1 / self._scale)

    # --- heads ---------------------------------------------------------------------------------
    def sequence_head(self, cls: str, num_labels: int) -> str:
        #  cls ─ pooler.dense ─ pooler_hidden_act ─ classifier ─►   (ContextPooler)
        h = self.spec.hidden_size
        pooled = self.activation(self.linear(cls, "pooler.dense", h, h, "/pooler"),
                                 self.spec.options["pooler_hidden_act"], "/pooler/act")
        return self.linear(pooled, "classifier", h, num_labels, "/classifier")
