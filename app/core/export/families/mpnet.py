"""MPNet: BERT's post-norm layers with a T5-style relative position bias shared by all layers, RoBERTa positions.

  positions: ids ≠ 1 ─ CumSum ─ ·mask ─ +1 ─► position table      (padding_idx is 1, whatever config.json says)
  bias:      Range(S) ─ j - i ─ LUT[bucket] ─ Gather(relative_attention_bias) ─ [1, N, S, S] ─► every layer

No token types. transformers' `compute_position_bias` always uses 32 buckets (max distance 128) whatever
`relative_attention_num_buckets` says; the table's extra rows are never read, and a table under 32 rows
would be indexed out of range, so it is refused. Buckets come from one int64 look-up table over every
relative distance the position table allows, computed in numpy float32 as torch computes them (equal for
all distances up to 8191). Mask and bias are added once, into one [B, N, S, S] bias that every layer's
scores add. Fused graphs keep these plain attention ops (`fused_attention = False`): MultiHeadAttention with
the bias as its `attention_bias` (and the mask as key padding, or inside the bias) measured 12-15% slower
per MPNet-base call, FP32 and INT8 alike (batch 1 x 128, 2 threads; 317.7 vs 359.1 ms FP32, 95.5 vs 112.3 ms
INT8 in one interleaved run, the same direction in three runs on a loaded machine).
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from app.core.errors import InvalidModelError
from app.core.export.families.base import EncoderFamily
from app.core.export.families.roberta import ROBERTA_SPECIAL_TOKENS

MPNET_LAYER = dict(layer="encoder.layer.{i}.", q="attention.attn.q", k="attention.attn.k", v="attention.attn.v",
                   o="attention.attn.o", ln1="attention.LayerNorm", ff1="intermediate.dense", ff2="output.dense",
                   ln2="output.LayerNorm")
PADDING_IDX = 1  # MPNetEmbeddings hard-codes it
BUCKETS, MAX_DISTANCE = 32, 128  # MPNetEncoder.compute_position_bias's defaults, the values it always uses


def relative_buckets(relative: np.ndarray, num_buckets: int = BUCKETS, max_distance: int = MAX_DISTANCE) -> np.ndarray:
    """MPNetEncoder.relative_position_bucket in numpy, float32 like torch: memory - context → bucket."""
    n = -relative.astype(np.int64)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log(n.astype(np.float32) / np.float32(exact)) / np.float32(math.log(max_distance / exact))
        large = exact + np.nan_to_num(log * np.float32(half - exact), neginf=0.0).astype(np.int64)
    return ret + np.where(n < exact, n, np.minimum(large, half - 1))


class MPNet(EncoderFamily):
    class_prefixes = {"mpnet": "MPNet"}
    uses_token_types = False
    default_pad_token_id = PADDING_IDX
    special_tokens = ROBERTA_SPECIAL_TOKENS | {"unk_token": "[UNK]"}
    pair_sep_twice = True
    prefix = "mpnet."
    layer_names = MPNET_LAYER
    fused_attention = False

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        buckets = int(config.get("relative_attention_num_buckets", BUCKETS))
        if buckets < BUCKETS:
            raise InvalidModelError(f"config.json: relative_attention_num_buckets is {buckets}, but MPNet always "
                                    f"looks up {BUCKETS} buckets (transformers fails on this model too). Fix the config.")
        return super().read_dims(config, need) | dict(type_vocab_size=0, options={"relative_buckets": buckets})

    @classmethod
    def position_offset(cls, pad_token_id: int) -> int:
        return PADDING_IDX + 1

    def positions(self, input_ids: str) -> tuple[str, str]:
        #  ids ─ Equal(1) ─ Not ─ Cast ─ CumSum ─ Mul(not pad) ─ Add(1) ─► positions (pads keep 1)
        s, g = self.spec, self.g
        not_pad = g.node("Cast", [g.node("Not", [g.node("Equal", [input_ids, g.const(PADDING_IDX)],
                                                          "/embeddings/positions/Equal")], "/embeddings/positions/Not")],
                         "/embeddings/positions/Cast", to=TensorProto.INT64)
        cum = g.node("CumSum", [not_pad, g.const(1)], "/embeddings/positions/CumSum")
        positions = g.node("Add", [g.node("Mul", [cum, not_pad], "/embeddings/positions/Mul"), g.const(PADDING_IDX)],
                           "/embeddings/positions/Add")
        table = self.tensor(self.prefix + "embeddings.position_embeddings.weight",
                            (s.max_position_embeddings, s.hidden_size))
        return positions, table

    def attention_mask_bias(self, attention_mask: str):
        #  Range(S) ─ Sub(j, i) ─ Add(L-1) ─ Gather(bucket LUT) ─ Gather(table [buckets, N]) ─ Transpose ─► [1,N,S,S]
        #  + the [B,1,1,S] mask bias ─► [B,N,S,S], added to every layer's scores
        s, g = self.spec, self.g
        longest = s.max_position_embeddings
        seq = g.node("Gather", [g.node("Shape", [attention_mask], "/encoder/position_bias/Shape"), g.const(1)],
                     "/encoder/position_bias/Gather_seq", axis=0)
        idx = g.node("Range", [g.const(0), seq, g.const(1)], "/encoder/position_bias/Range")
        rel = g.node("Sub", [g.node("Unsqueeze", [idx, g.const([0])], "/encoder/position_bias/Unsqueeze_memory"),
                             g.node("Unsqueeze", [idx, g.const([1])], "/encoder/position_bias/Unsqueeze_context")],
                     "/encoder/position_bias/Sub")  # [S, S]: memory - context
        lut = g.const(relative_buckets(np.arange(-(longest - 1), longest)))  # [2L - 1]
        buckets = g.node("Gather", [lut, g.node("Add", [rel, g.const(longest - 1)], "/encoder/position_bias/Add")],
                         "/encoder/position_bias/Gather_bucket", axis=0)
        table = self.tensor(self.prefix + "encoder.relative_attention_bias.weight",
                            (s.options["relative_buckets"], s.num_heads))
        values = g.node("Gather", [table, buckets], "/encoder/position_bias/Gather", axis=0)  # [S, S, N]
        bias = g.node("Unsqueeze", [g.node("Transpose", [values], "/encoder/position_bias/Transpose", perm=[2, 0, 1]),
                                    g.const([0])], "/encoder/position_bias/Unsqueeze")  # [1, N, S, S]
        return g.node("Add", [bias, super().attention_mask_bias(attention_mask)], "/encoder/mask/Add_position_bias")

    def sequence_head(self, cls: str, num_labels: int) -> str:
        return self.dense_head(cls, num_labels, "tanh")
