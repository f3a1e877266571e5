"""Helpers to compare our ONNX models with the transformers reference on padded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def padded_batch(vocab_size: int, pad_id: int, *, lengths=(11, 7, 3), seed: int = 0, low: int = 5):
    """input_ids / attention_mask / token_type_ids for a batch of different lengths with padding."""
    rng = np.random.default_rng(seed)
    batch, seq = len(lengths), max(lengths)
    mask = np.zeros((batch, seq), np.int64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = np.where(mask == 1, rng.integers(low, vocab_size, (batch, seq)), pad_id)
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types * mask}


def run_onnx(onnx_path: Path, feed: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: v for k, v in feed.items() if k in names})
    return {o.name: r for o, r in zip(session.get_outputs(), outputs)}


def run_reference(model, feed: dict, input_names) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in feed.items() if k in input_names})
    out = {k: v.numpy() for k, v in out.items() if k in ("logits", "start_logits", "end_logits",
                                                         "last_hidden_state")}
    if "last_hidden_state" in out:  # our graph's names, as Optimum's sentence-transformers export
        out["token_embeddings"] = hidden = out.pop("last_hidden_state")
        m = feed["attention_mask"][..., None].astype(np.float32)  # (batch, seq, 1)
        out["sentence_embedding"] = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)  # mean pooling
    return out


def max_abs_diff(ours: dict, ref: dict, mask: np.ndarray) -> dict[str, float]:
    """Max |ours - ref| per output; per-token outputs are compared at real (non-pad) tokens."""
    diffs = {}
    for name, a in ours.items():
        b = ref[name]
        assert a.shape == b.shape, f"{name}: {a.shape} vs reference {b.shape}"
        d = np.abs(a - b)
        diffs[name] = float(d[mask.astype(bool)].max() if d.ndim >= 2 and d.shape[:2] == mask.shape else d.max())
    return diffs
