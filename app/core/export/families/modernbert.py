"""ModernBERT: pre-norm layers with rotary positions, alternating global and sliding-window attention, GeGLU.

  ids ─ tok_embeddings ─ norm ─► layer × N ─ final_norm ─► task head
  layer i:  x ─ [attn_norm, not in layer 0] ─ Wqkv ─ rotary(q, k) ─ attention(global | local window) ─ Wo ─ +x
            x ─ mlp_norm ─ Wi (input, gate halves) ─ act(input)·gate ─ Wo ─ +x

Layers follow `layer_types` (transformers 5) or `global_attn_every_n_layers` (Hub configs): layer i is global
when i % n == 0, and a local layer sees keys within `local_attention // 2` positions either side. Global and
local layers rotate with their own θ (`global_rope_theta`, `local_rope_theta`). Plain graphs compute cos/sin
from the positions; fused ones use ONNX Runtime's RotaryEmbedding on float32 caches of every position (the
same float32 products and cos/sin as torch). Neither is a gathered table, so INT8 leaves the rotary path in
FP32. Profiled on ModernBERT-base INT8 (batch 1 x 128), the rotation in plain ops and the Splits took 20% of
the time; RotaryEmbedding and MatMuls on Wi's two halves (no Split) cut a call from ~100 to ~66 ms. Linear and
LayerNorm biases
follow `attention_bias`, `mlp_bias`, `norm_bias`, `classifier_bias` (a LayerNorm without bias gets a zero
one, so the guard can still scale outlier channels through it). The heads run the prediction head
(dense ─ act ─ norm) before `classifier`: on the pooled state (first token or mean, `classifier_pooling`)
for sequence classification, on every token for token classification and QA (whose span scorer is also
named `classifier`).

Flash-attention-only settings (`deterministic_flash_attn`, unpadding, `reference_compile`) do not change
what the model computes and are ignored; RoPE scaling (`rope_type` other than "default") is refused.
With `fused=True` attention is ONNX Runtime's MultiHeadAttention, after the rotation: global layers pass
the 0/1 mask as key padding, local layers an additive [B, 1, S, S] bias holding padding and window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from app.core.errors import UnsupportedModelError
from app.core.export.families.base import _FLOAT_MIN, EncoderFamily

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "tanh")


def _rope(config: dict, kind: str, old_key: str, default: float) -> float:
    """θ of one layer type: transformers 5's `rope_parameters[kind]`, else the Hub's `<kind>_rope_theta`."""
    params = (config.get("rope_parameters") or {}).get(kind) or {}
    old = config.get("rope_scaling") or {}
    scaling = params.get("rope_type", "default") if not old else old.get("rope_type", old.get("type", "?"))
    if scaling != "default" or old:
        raise UnsupportedModelError(f"config.json asks for {scaling!r} RoPE scaling; Pocket NLP exports ModernBERT "
                                    "with plain rotary positions only. Use the model without RoPE scaling.")
    return float(params.get("rope_theta", config.get(old_key, default)))


@dataclass(frozen=True)
class _Attention:
    """Per-sequence constants every layer reads: masks by layer type and their rotary cos/sin."""

    mask: dict[str, str]  # "full_attention" / "sliding_attention" → the attention op's mask input
    rotary: dict[str, tuple[str, str]]  # layer type → (cos, sin), broadcastable over the rotated layout


class ModernBert(EncoderFamily):
    class_prefixes = {"modernbert": "ModernBert"}
    uses_token_types = False
    default_pad_token_id = 50283
    prefix = "model."
    word_embeddings = "embeddings.tok_embeddings.weight"

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        layers, hidden, heads = int(need("num_hidden_layers")), int(need("hidden_size")), int(need("num_attention_heads"))
        if config.get("head_dim") not in (None, hidden // max(heads, 1)):
            raise UnsupportedModelError(f"config.json sets head_dim {config['head_dim']}, not hidden_size / heads; "
                                        "Pocket NLP exports ModernBERT with the standard head size only.")
        every = int(config.get("global_attn_every_n_layers") or 3)
        types = config.get("layer_types") or ["sliding_attention" if i % every else "full_attention"
                                              for i in range(layers)]
        if len(types) != layers or not set(types) <= {"full_attention", "sliding_attention"}:
            raise UnsupportedModelError(f"config.json has layer_types {types!r}; expected {layers} entries of "
                                        "'full_attention' or 'sliding_attention'.")
        head_act = str(config.get("classifier_activation", "gelu"))
        if head_act not in ACTIVATIONS:
            raise UnsupportedModelError(f"config.json: classifier_activation {head_act!r} is not supported "
                                        f"(supported: {', '.join(ACTIVATIONS)}).")
        pooling = str(config.get("classifier_pooling", "cls"))
        if pooling not in ("cls", "mean"):
            raise UnsupportedModelError(f"config.json: classifier_pooling {pooling!r} is not 'cls' or 'mean'.")
        options = dict(layer_types=list(types), window=int(config.get("local_attention", 128)) // 2,
                       global_theta=_rope(config, "full_attention", "global_rope_theta", 160_000.0),
                       local_theta=_rope(config, "sliding_attention", "local_rope_theta", 10_000.0),
                       attention_bias=bool(config.get("attention_bias", False)),
                       mlp_bias=bool(config.get("mlp_bias", False)), norm_bias=bool(config.get("norm_bias", False)),
                       classifier_bias=bool(config.get("classifier_bias", False)),
                       classifier_activation=head_act, classifier_pooling=pooling)
        return dict(hidden_size=hidden, embedding_size=hidden, num_layers=layers, num_heads=heads,
                    intermediate_size=int(need("intermediate_size")), type_vocab_size=0,
                    layer_norm_eps=float(config.get("norm_eps", 1e-5)),
                    hidden_act=str(config.get("hidden_activation", "gelu")), options=options)

    # --- small blocks with optional biases ------------------------------------------------------
    def _linear(self, x: str, key: str, d_in: int, d_out: int, path: str, bias: bool) -> str:
        #  x ─ MatMul(W[in,out]) ─ [Add(b)] ─►
        y = self.g.node("MatMul", [x, self.tensor(key + ".weight", (d_in, d_out), transpose=True)], path + "/MatMul")
        return self.g.node("Add", [y, self.tensor(key + ".bias", (d_out,))], path + "/Add") if bias else y

    def layer_norm(self, x: str, key: str, dim: int, path: str) -> str:
        if self.spec.options["norm_bias"]:
            return super().layer_norm(x, key, dim, path)
        gamma = self.tensor(key + ".weight", (dim,))
        beta = self.g.weight(key + ".bias(zero)", (dim,), lambda: np.zeros(dim, np.float32))
        return self.g.node("LayerNormalization", [x, gamma, beta], path, axis=-1, epsilon=self.spec.layer_norm_eps)

    def activation(self, x: str, kind: str, path: str) -> str:
        if self.fused and kind == "gelu":  # exact (erf) GELU as one contrib op
            return self.g.node("Gelu", [x], path + "/Gelu", domain="com.microsoft")
        return super().activation(x, kind, path)

    # --- embeddings and per-sequence constants --------------------------------------------------
    def embeddings(self, input_ids: str, token_type_ids: str | None) -> str:
        #  ids ─ Gather(tok_embeddings) ─ LayerNorm ─►   (no positions: they are rotary, in each layer)
        s, p = self.spec, self.prefix + "embeddings."
        word = self.g.node("Gather", [self.tensor(p + "tok_embeddings.weight", (s.vocab_size, s.hidden_size)),
                                      input_ids], "/embeddings/tok_embeddings/Gather")
        return self.layer_norm(word, p + "norm", s.hidden_size, "/embeddings/norm")

    def _cos_sin(self, positions: str | None, theta: float, name: str) -> tuple[str, str]:
        #  plain:  positions [S] ─ Unsqueeze ─ Mul(inv_freq) ─ Concat(f, f) ─┬─ Cos ─► [S, D]
        #                                                                    └─ Sin ─►
        #  fused:  cos/sin caches [max positions, D/2] for ONNX Runtime's RotaryEmbedding
        g, d = self.g, self.spec.hidden_size // self.spec.num_heads
        inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(np.float32)
        if self.fused:  # float32 products and cos/sin, as torch computes them: the same values as the plain graph
            n = self.spec.max_position_embeddings

            def freqs() -> np.ndarray:  # [positions, D/2]
                return np.outer(np.arange(n, dtype=np.float32), inv_freq).astype(np.float32)
            return (g.weight(f"rotary.{name}.cos_cache", (n, d // 2), lambda: np.cos(freqs())),
                    g.weight(f"rotary.{name}.sin_cache", (n, d // 2), lambda: np.sin(freqs())))
        freqs = g.node("Mul", [g.node("Unsqueeze", [positions, g.const([1])], f"/rotary/{name}/Unsqueeze"),
                               g.const(inv_freq, np.float32)], f"/rotary/{name}/Mul")
        emb = g.node("Concat", [freqs, freqs], f"/rotary/{name}/Concat", axis=-1)
        return g.node("Cos", [emb], f"/rotary/{name}/Cos"), g.node("Sin", [emb], f"/rotary/{name}/Sin")

    def attention_mask_bias(self, attention_mask: str) -> _Attention:
        #  mask ─ Cast(bool) ─ Unsqueeze ──────────────────────┬─ Where(0, min) ─► global bias [B,1,1,S]
        #  Range(S) ─ |i - j| ─ LessOrEqual(window) [S,S] ─ And ┴─ Where(0, min) ─► local bias [B,1,S,S]
        g, o = self.g, self.spec.options
        seq = g.node("Gather", [g.node("Shape", [attention_mask], "/rotary/Shape"), g.const(1)], "/rotary/Gather", axis=0)
        idx = g.node("Range", [g.const(0), seq, g.const(1)], "/rotary/Range")  # [S]
        positions = None if self.fused else g.node("Cast", [idx], "/rotary/Cast", to=TensorProto.FLOAT)
        types = set(o["layer_types"])
        thetas = {"full_attention": o["global_theta"], "sliding_attention": o["local_theta"]}
        rotary = {t: self._cos_sin(positions, thetas[t], t.split("_")[0]) for t in sorted(types)}
        zero, low = g.const(0.0, np.float32), g.const(_FLOAT_MIN, np.float32)
        keep = g.node("Cast", [attention_mask], "/encoder/mask/Cast", to=TensorProto.BOOL)  # [B, S]
        keep4 = g.node("Unsqueeze", [keep, g.const([1, 2])], "/encoder/mask/Unsqueeze")  # [B, 1, 1, S]
        mask = {}
        if "full_attention" in types:
            mask["full_attention"] = (g.node("Cast", [attention_mask], "/encoder/mask/Cast_int32", to=TensorProto.INT32)
                                      if self.fused else g.node("Where", [keep4, zero, low], "/encoder/mask/Where"))
        if "sliding_attention" in types:
            dist = g.node("Abs", [g.node("Sub", [g.node("Unsqueeze", [idx, g.const([1])], "/encoder/window/Unsqueeze_i"),
                                                 g.node("Unsqueeze", [idx, g.const([0])], "/encoder/window/Unsqueeze_j")],
                                         "/encoder/window/Sub")], "/encoder/window/Abs")  # [S, S]
            near = g.node("LessOrEqual", [dist, g.const(o["window"])], "/encoder/window/LessOrEqual")
            both = g.node("And", [keep4, near], "/encoder/window/And")  # [B, 1, S, S]
            mask["sliding_attention"] = g.node("Where", [both, zero, low], "/encoder/window/Where")
        return _Attention(mask, rotary)

    # --- encoder layers ------------------------------------------------------------------------
    def block(self, x: str, consts: _Attention, i: int) -> str:
        """One pre-norm layer; the last one ends with the final norm."""
        s, o = self.spec, self.spec.options
        key, path, h = f"{self.prefix}layers.{i}.", f"/encoder/layer.{i}", s.hidden_size
        kind = o["layer_types"][i]
        normed = x if i == 0 else self.layer_norm(x, key + "attn_norm", h, f"{path}/attn_norm")
        ctx = self._attention(normed, consts, kind, key, path)
        attn = self._linear(ctx, key + "attn.Wo", h, h, f"{path}/attention/output", o["attention_bias"])
        x = self.g.node("Add", [x, attn], f"{path}/attention/Add_residual")
        mlp = self.feed_forward(self.layer_norm(x, key + "mlp_norm", h, f"{path}/mlp_norm"), key, path)
        x = self.g.node("Add", [x, mlp], f"{path}/ffn/Add_residual")
        if i == s.num_layers - 1:
            x = self.layer_norm(x, self.prefix + "final_norm", h, "/encoder/final_norm")
            self.hidden = x  # the per-token states the heads (mean pooling, prediction head) start from
        return x

    def _rotate(self, x: str, cos: str, sin: str, path: str) -> str:
        #  x ─┬─ Mul(cos) ───────────────────────────────────┬─ Add ─►   x·cos + rotate_half(x)·sin
        #     └─ Split(halves) ─ Concat(-x2, x1) ─ Mul(sin) ─┘
        g, d = self.g, self.spec.hidden_size // self.spec.num_heads
        x1, x2 = g.node("Split", [x, g.const([d // 2, d // 2])], path + "/Split", outputs=2, axis=-1)
        rotated = g.node("Concat", [g.node("Neg", [x2], path + "/Neg"), x1], path + "/Concat", axis=-1)
        return g.node("Add", [g.node("Mul", [x, cos], path + "/Mul_cos"),
                              g.node("Mul", [rotated, sin], path + "/Mul_sin")], path + "/Add")

    def _attention(self, x: str, consts: _Attention, kind: str, key: str, path: str) -> str:
        #  x ─ Wqkv ─ Split(q, k, v) ─ heads ─ rotary(q, k) ─ attention(mask) ─ merge heads ─►
        s, g = self.spec, self.g
        h, heads = s.hidden_size, s.num_heads
        d = h // heads
        p = f"{path}/attention"
        mask, rotary = consts.mask[kind], consts.rotary[kind]
        qkv = self._linear(x, key + "attn.Wqkv", h, 3 * h, p + "/qkv", s.options["attention_bias"])
        q, k, v = g.node("Split", [qkv, g.const([h, h, h])], p + "/qkv/Split", outputs=3, axis=-1)
        if self.fused:  # RotaryEmbedding on [B, S, H] (positions from 0), then MultiHeadAttention
            q, k = (g.node("RotaryEmbedding", [t, g.const([0]), *rotary], f"{p}/{n}/RotaryEmbedding",
                           domain="com.microsoft", num_heads=heads, interleaved=0) for n, t in (("q", q), ("k", k)))
            # global: the 0/1 mask as key padding; local: the additive bias as attention_bias
            inputs = [q, k, v, "", mask] if kind == "full_attention" else [q, k, v, "", "", mask]
            return g.node("MultiHeadAttention", inputs, p + "/MultiHeadAttention", domain="com.microsoft",
                          num_heads=heads)

        def heads_of(t: str, n: str) -> str:
            t = g.node("Reshape", [t, g.const([0, 0, heads, d])], f"{p}/{n}/Reshape")
            return g.node("Transpose", [t], f"{p}/{n}/Transpose", perm=[0, 2, 1, 3])  # [B, N, S, D]

        q = self._rotate(heads_of(q, "q"), *rotary, p + "/q/rotary")
        k = self._rotate(heads_of(k, "k"), *rotary, p + "/k/rotary")
        kt = g.node("Transpose", [k], p + "/k/Transpose_t", perm=[0, 1, 3, 2])
        scores = g.node("Mul", [g.node("MatMul", [q, kt], p + "/scores/MatMul"),
                                g.const(1.0 / math.sqrt(d), np.float32)], p + "/scores/Mul")
        probs = g.node("Softmax", [g.node("Add", [scores, mask], p + "/scores/Add_mask")], p + "/Softmax", axis=-1)
        ctx = g.node("MatMul", [probs, heads_of(v, "v")], p + "/context/MatMul")
        ctx = g.node("Transpose", [ctx], p + "/context/Transpose", perm=[0, 2, 1, 3])
        return g.node("Reshape", [ctx, g.const([0, 0, h])], p + "/context/Reshape")

    def feed_forward(self, x: str, key: str, path: str) -> str:
        """GeGLU: Wi packs the input and the gate halves; returns Wo's output (the residual is the block's)."""
        #  x ─┬─ Wi[:ff] ─ act ─┬─ Mul ─ Wo ─►     two MatMuls on Wi's halves: no Split of a [B, S, 2·ff]
        #     └─ Wi[ff:] ───────┘                  copy (7% of ModernBERT-base's INT8 time went to Splits)
        s, g = self.spec, self.g
        h, ff, bias = s.hidden_size, s.intermediate_size, s.options["mlp_bias"]
        wi = key + "mlp.Wi"
        self._check_shape(wi + ".weight", (2 * ff, h))
        if bias:
            self._check_shape(wi + ".bias", (2 * ff,))

        def half(name: str, rows: slice) -> str:
            #  x ─ MatMul(Wi[rows]ᵀ) ─ [Add(b[rows])] ─►
            w = self.combined(f"{wi}.{name}.weight.T", (h, ff), [wi + ".weight"], lambda t: t[rows].T)
            y = g.node("MatMul", [x, w], f"{path}/ffn/Wi_{name}/MatMul")
            if not bias:
                return y
            b = self.combined(f"{wi}.{name}.bias", (ff,), [wi + ".bias"], lambda t: t[rows])
            return g.node("Add", [y, b], f"{path}/ffn/Wi_{name}/Add")

        inp, gate = half("input", slice(0, ff)), half("gate", slice(ff, 2 * ff))
        act = self.activation(inp, s.hidden_act, f"{path}/ffn/act")
        return self._linear(g.node("Mul", [act, gate], f"{path}/ffn/Mul_gate"), key + "mlp.Wo", ff, h,
                            f"{path}/ffn/Wo", bias)

    # --- heads ---------------------------------------------------------------------------------
    def linear(self, x: str, key: str, d_in: int, d_out: int, path: str) -> str:
        """The task heads' Linear: `classifier` (also QA's span scorer), after the prediction head."""
        if key in ("classifier", "qa_outputs"):
            x, key = self._prediction_head(x), "classifier"
        return self._linear(x, key, d_in, d_out, path, True)

    def _prediction_head(self, x: str) -> str:
        #  x ─ head.dense ─ act ─ head.norm ─►
        s, o = self.spec, self.spec.options
        dense = self._linear(x, "head.dense", s.hidden_size, s.hidden_size, "/head/dense", o["classifier_bias"])
        act = self.activation(dense, o["classifier_activation"], "/head/act")
        return self.layer_norm(act, "head.norm", s.hidden_size, "/head/norm")

    def sequence_head(self, cls: str, num_labels: int) -> str:
        """The first token's state, or the mean over real tokens (`classifier_pooling`), then the head."""
        #  hidden ─ Mul(mask) ─ ReduceSum ─ Div(ReduceSum(mask)) ─►   (mean pooling)
        if self.spec.options["classifier_pooling"] == "mean":
            g = self.g
            m = g.node("Unsqueeze", [g.node("Cast", ["attention_mask"],
                                            "/head/mean/Cast", to=TensorProto.FLOAT), g.const([-1])],
                       "/head/mean/Unsqueeze")  # [B, S, 1]
            total = g.node("ReduceSum", [g.node("Mul", [self.hidden, m], "/head/mean/Mul"), g.const([1])],
                           "/head/mean/ReduceSum", keepdims=0)
            count = g.node("ReduceSum", [m, g.const([1])], "/head/mean/ReduceSum_mask", keepdims=0)  # [B, 1]
            cls = g.node("Div", [total, count], "/head/mean/Div")
        return self.linear(cls, "classifier", self.spec.hidden_size, num_labels, "/classifier")
