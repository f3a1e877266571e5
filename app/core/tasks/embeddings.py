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
