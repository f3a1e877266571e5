"""GPT-2 and DistilGPT-2: a pre-norm causal decoder with learned positions and, for generation, a KV cache.

  input_ids ─ Gather(wte) ─┐
  position_ids ─ Gather(wpe) ┴─ Add ─► block × N ─ LayerNorm(ln_f) ─► task head (tied LM head, last token, ...)
  block = x + attention(ln_1(x)) ; x + mlp(ln_2(x))            (pre-norm: the residual skips the LayerNorms)
  attention: x ─ Conv1D c_attn ─ Split q,k,v ─ [Concat past k,v] ─ softmax(q·kᵀ·scale + causal/pad bias)·v ─ c_proj

Conv1D stores its weight (in, out), as a MatMul takes it: no transpose. With a cache (the text-generation task
sets `Task.decoder_cache`), the graph has Optimum's `text-generation-with-past` signature, one graph for the
prompt (an empty past, sequence length 0) and every next token:

  input_ids [B,S], attention_mask [B,P+S], position_ids [B,S], past_key_values.N.key/value [B,heads,P,d]
    → logits [B,S,V], present.N.key/value [B,heads,P+S,d]

Without a cache (GPT2Model, ...ForSequenceClassification, ...ForTokenClassification) the inputs are
input_ids and attention_mask, positions 0..S-1 as transformers counts them. `fused=True` emits ONNX
Runtime's MultiHeadAttention (with past_key/past_value and the additive causal/padding bias) and FastGelu;
the QKV projection stays a plain MatMul so quantization can treat it.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from app.core.errors import UnsupportedModelError
from app.core.export.checkpoint import Checkpoint
from app.core.export.families.base import _FLOAT_MIN, BATCH, SEQ, EncoderFamily
from app.core.export.graph import Graph

GPT2_SPECIAL_TOKENS = {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>"}
PAST, TOTAL = "past_sequence_length", "past_sequence_length + sequence_length"


class Gpt2(EncoderFamily):
    class_prefixes = {"gpt2": "GPT2"}
    uses_token_types = False
    default_pad_token_id = 0
    special_tokens = GPT2_SPECIAL_TOKENS
    prefix = "transformer."
    layer_names = {}
    word_embeddings = "wte.weight"

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        if config.get("add_cross_attention"):
            raise UnsupportedModelError("GPT-2 with cross-attention (an encoder-decoder's decoder) is not supported; "
                                        "Pocket NLP converts stand-alone GPT-2 models.")
        hidden = int(need("n_embd", "hidden_size"))
        options = {"scale_attn_weights": bool(config.get("scale_attn_weights", True)),
                   "scale_attn_by_inverse_layer_idx": bool(config.get("scale_attn_by_inverse_layer_idx", False)),
                   "tie_word_embeddings": bool(config.get("tie_word_embeddings", True))}
        for key in ("eos_token_id", "bos_token_id"):
            if isinstance(config.get(key), int) and not isinstance(config.get(key), bool):
                options[key] = config[key]
        return dict(hidden_size=hidden, embedding_size=hidden, num_layers=int(need("n_layer", "num_hidden_layers")),
                    num_heads=int(need("n_head", "num_attention_heads")),
                    intermediate_size=int(config.get("n_inner") or 4 * hidden), type_vocab_size=0,
                    layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                    hidden_act=str(config.get("activation_function", "gelu_new")), options=options)

    def __init__(self, spec, ckpt: Checkpoint, *, opset: int = 17, fused: bool = False, head_config=None):
        from app.core.tasks import get_task

        super().__init__(spec, ckpt, opset=opset, fused=fused, head_config=head_config)
        self.with_past = bool(getattr(get_task(spec.task), "decoder_cache", False))
        self.hidden = self.mask = ""  # the final hidden state and the attention mask, for the heads

    def conv1d(self, x: str, key: str, d_in: int, d_out: int, path: str) -> str:
        #  x ─ MatMul(W[in,out], as stored) ─ Add(b) ─►
        w, b = self.tensor(key + ".weight", (d_in, d_out)), self.tensor(key + ".bias", (d_out,))
        return self.g.node("Add", [self.g.node("MatMul", [x, w], path + "/MatMul"), b], path + "/Add")

    # --- masks --------------------------------------------------------------------------------------
    def attention_bias(self, input_ids: str, attention_mask: str) -> str:
        """[B,1,S,P+S] additive bias: 0 where query i (at absolute position P+i) may see key j (j ≤ P+i and
        key j is not padding), float32 min elsewhere."""
        #  T = Shape(mask)[1], S = Shape(ids)[1] ─ Range(T-S, T) [S,1] ≥ Range(0, T) [1,T] ─ causal [S,T] ─┐
        #  attention_mask ─ Cast(bool) ─ Unsqueeze [B,1,1,T] ──────────────────────────────── And ─ Where(0, min) ─►
        g = self.g
        dim = lambda t, i, n: g.node("Gather", [g.node("Shape", [t], f"/mask/{n}/Shape"), g.const(i)],
                                     f"/mask/{n}/Gather", axis=0)
        total, seq = dim(attention_mask, 1, "total"), dim(input_ids, 1, "seq")
        queries = g.node("Range", [g.node("Sub", [total, seq], "/mask/past/Sub"), total, g.const(1)], "/mask/q/Range")
        keys = g.node("Range", [g.const(0), total, g.const(1)], "/mask/k/Range")
        causal = g.node("LessOrEqual", [g.node("Unsqueeze", [keys, g.const([0])], "/mask/k/Unsqueeze"),
                                        g.node("Unsqueeze", [queries, g.const([1])], "/mask/q/Unsqueeze")],
                        "/mask/causal/LessOrEqual")  # [S, T]
        real = g.node("Unsqueeze", [g.node("Cast", [attention_mask], "/mask/pad/Cast", to=TensorProto.BOOL),
                                    g.const([1, 2])], "/mask/pad/Unsqueeze")  # [B, 1, 1, T]
        allowed = g.node("And", [causal, real], "/mask/And")  # [B, 1, S, T]
        return g.node("Where", [allowed, g.const(0.0, np.float32), g.const(_FLOAT_MIN, np.float32)], "/mask/Where")

    # --- layers -------------------------------------------------------------------------------------
    def scale(self, i: int) -> float:
        o, d = self.spec.options, self.spec.hidden_size // self.spec.num_heads
        return (1 / math.sqrt(d) if o.get("scale_attn_weights", True) else 1.0) / (
            i + 1 if o.get("scale_attn_by_inverse_layer_idx") else 1)

    def self_attention(self, x: str, bias: str, i: int) -> tuple[str, str | None, str | None]:
        """ln_1(x) → the merged heads' context and, with a cache, the present key and value [B,heads,T,d]."""
        s, g = self.spec, self.g
        h, heads = s.hidden_size, s.num_heads
        d, key, path = h // heads, f"{self.prefix}h.{i}.attn.", f"/h.{i}/attn"
        past = [g.input(f"past_key_values.{i}.{kv}", TensorProto.FLOAT, [BATCH, heads, PAST, d])
                for kv in ("key", "value")] if self.with_past else None
        w = self.tensor(key + "c_attn.weight", (h, 3 * h))
        b = self.tensor(key + "c_attn.bias", (3 * h,))
        qkv = g.node("MatMul", [x, w], f"{path}/c_attn/MatMul")
        if self.fused:
            #  x ─ MatMul(c_attn) ─ Split ─ MultiHeadAttention(+b, bias, past k/v) ─► context, present k/v
            q, k, v = g.node("Split", [qkv], f"{path}/c_attn/Split", outputs=3, axis=-1)
            inputs = [q, k, v, b, "", bias] + (past or [])
            out = g.node("MultiHeadAttention", inputs, f"{path}/MultiHeadAttention", outputs=3 if past else 1,
                         domain="com.microsoft", num_heads=heads, scale=self.scale(i))
            return (out[0], out[1], out[2]) if past else (out, None, None)
        q, k, v = g.node("Split", [g.node("Add", [qkv, b], f"{path}/c_attn/Add")], f"{path}/c_attn/Split",
                         outputs=3, axis=-1)
        split = g.const([0, 0, heads, d])

        def heads_of(y: str, name: str) -> str:  # [B,S,H] → [B,heads,S,d]
            y = g.node("Reshape", [y, split], f"{path}/{name}/Reshape")
            return g.node("Transpose", [y], f"{path}/{name}/Transpose", perm=[0, 2, 1, 3])

        q, k, v = heads_of(q, "q"), heads_of(k, "k"), heads_of(v, "v")
        if past:
            k = g.node("Concat", [past[0], k], f"{path}/k/Concat_past", axis=2)
            v = g.node("Concat", [past[1], v], f"{path}/v/Concat_past", axis=2)
        kt = g.node("Transpose", [k], f"{path}/k/Transpose_scores", perm=[0, 1, 3, 2])
        scores = g.node("Mul", [g.node("MatMul", [q, kt], f"{path}/scores/MatMul"),
                                g.const(self.scale(i), np.float32)], f"{path}/scores/Mul")
        probs = g.node("Softmax", [g.node("Add", [scores, bias], f"{path}/scores/Add_mask")], f"{path}/Softmax",
                       axis=-1)
        ctx = g.node("Transpose", [g.node("MatMul", [probs, v], f"{path}/context/MatMul")], f"{path}/context/Transpose",
                     perm=[0, 2, 1, 3])
        return g.node("Reshape", [ctx, g.const([0, 0, h])], f"{path}/context/Reshape"), k if past else None, \
            v if past else None

    def mlp(self, x: str, i: int) -> str:
        s, g = self.spec, self.g
        h, ff, key, path = s.hidden_size, s.intermediate_size, f"{self.prefix}h.{i}.mlp.", f"/h.{i}/mlp"
        if self.fused and s.hidden_act != "relu":
            #  x ─ MatMul(c_fc) ─ FastGelu / BiasGelu(b) ─►
            inner = g.node("MatMul", [x, self.tensor(key + "c_fc.weight", (h, ff))], f"{path}/c_fc/MatMul")
            op = "BiasGelu" if s.hidden_act == "gelu" else "FastGelu"
            act = g.node(op, [inner, self.tensor(key + "c_fc.bias", (ff,))], f"{path}/{op}", domain="com.microsoft")
        else:
            act = self.activation(self.conv1d(x, key + "c_fc", h, ff, f"{path}/c_fc"), s.hidden_act, f"{path}/act")
        return self.conv1d(act, key + "c_proj", ff, h, f"{path}/c_proj")

    def decoder_block(self, x: str, bias: str, i: int) -> tuple[str, str | None, str | None]:
        #  x ─┬─ LayerNorm(ln_1) ─ attention ─ Conv1D(c_proj) ─ Add ─┬─ LayerNorm(ln_2) ─ mlp ─ Add ─►
        #     └──────────────────────────────────────────────────────┘└───────────────────────┘
        h, key, path = self.spec.hidden_size, f"{self.prefix}h.{i}.", f"/h.{i}"
        ctx, present_k, present_v = self.self_attention(self.layer_norm(x, key + "ln_1", h, f"{path}/ln_1"), bias, i)
        attn = self.conv1d(ctx, key + "attn.c_proj", h, h, f"{path}/attn/c_proj")
        x = self.g.node("Add", [x, attn], f"{path}/Add_attn")
        ff = self.mlp(self.layer_norm(x, key + "ln_2", h, f"{path}/ln_2"), i)
        return self.g.node("Add", [x, ff], f"{path}/Add_mlp"), present_k, present_v

    # --- heads (called by the task plug-ins) ------------------------------------------------------
    def lm_head(self, x: str) -> str:
        """[B,S,H] → [B,S,V] logits; tied to the token embeddings (one table in the file, read transposed)."""
        s, g = self.spec, self.g
        if not s.options.get("tie_word_embeddings", True) and "lm_head.weight" in self.ckpt:
            w = self.tensor("lm_head.weight", (s.hidden_size, s.vocab_size), transpose=True)
        else:
            w = g.node("Transpose", [self.wte], "/lm_head/Transpose", perm=[1, 0])
        return g.node("MatMul", [x, w], "/lm_head/MatMul")

    def sequence_head(self, cls: str, num_labels: int) -> str:
        """GPT2ForSequenceClassification scores the last real token (not the first-token state it is given)."""
        #  hidden ─ GatherND(last real token) ─ MatMul(scoreᵀ, no bias) ─► [B, labels]
        g = self.g
        real = g.node("Cast", [self.mask], "/score/last_token/Cast", to=TensorProto.FLOAT)
        index = g.node("ArgMax", [real], "/score/last_token/ArgMax", axis=1, keepdims=1, select_last_index=1)
        last = g.node("GatherND", [self.hidden, index], "/score/GatherND", batch_dims=1)  # [B, H]
        w = self.tensor("score.weight", (self.spec.hidden_size, num_labels), transpose=True)
        return g.node("MatMul", [last, w], "/score/MatMul")

    def build(self) -> Graph:
        from app.core.tasks import get_task

        s, g = self.spec, self.g
        ids = g.input("input_ids", TensorProto.INT64, [BATCH, SEQ])
        mask = g.input("attention_mask", TensorProto.INT64, [BATCH, TOTAL if self.with_past else SEQ])
        if self.with_past:
            positions = g.input("position_ids", TensorProto.INT64, [BATCH, SEQ])
        else:  # 0..S-1, as transformers counts positions without a cache
            seq = g.node("Gather", [g.node("Shape", [ids], "/positions/Shape"), g.const(1)], "/positions/Gather",
                         axis=0)
            positions = g.node("Range", [g.const(0), seq, g.const(1)], "/positions/Range")
        self.wte = self.tensor(self.prefix + "wte.weight", (s.vocab_size, s.hidden_size))
        wpe = self.tensor(self.prefix + "wpe.weight", (s.max_position_embeddings, s.hidden_size))
        x = g.node("Add", [g.node("Gather", [self.wte, ids], "/wte/Gather"),
                           g.node("Gather", [wpe, positions], "/wpe/Gather")], "/embeddings/Add")
        bias = self.attention_bias(ids, mask)
        presents = []
        for i in range(s.num_layers):
            x, present_k, present_v = self.decoder_block(x, bias, i)
            presents.append((present_k, present_v))
        x = self.layer_norm(x, self.prefix + "ln_f", s.hidden_size, "/ln_f")
        self.hidden, self.mask = x, mask
        get_task(s.task).build_head(self, x)
        if self.with_past:
            d = s.hidden_size // s.num_heads
            for i, (k, v) in enumerate(presents):
                g.output(k, f"present.{i}.key", [BATCH, s.num_heads, TOTAL, d])
                g.output(v, f"present.{i}.value", [BATCH, s.num_heads, TOTAL, d])
        self.check_problems()
        return g
