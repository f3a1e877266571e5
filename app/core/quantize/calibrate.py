"""The guard's calibration run: FP32 outputs, and the activations that feed each quantizable MatMul."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from app.core.quantize.model import Model


@dataclass
class Calibration:
    feeds: list[dict[str, np.ndarray]]  # batches of model inputs
    reference: list[dict[str, np.ndarray]] = field(default_factory=list)  # FP32 outputs per batch
    peaks: dict[str, np.ndarray] = field(default_factory=dict)  # node input → (channels,) max |x| over all tokens
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # node input → (tokens, channels) sample
    per_example: set[str] = field(default_factory=set)  # node inputs with one row per example (pooler, head)
    description: str = ""


def _batches(feeds: list[dict[str, np.ndarray]], max_tokens: int = 2048, max_rows: int = 16) -> list[list[int]]:
    """Feed indices grouped by similar length, so a padded batch wastes little."""
    order = sorted(range(len(feeds)), key=lambda i: feeds[i]["attention_mask"].shape[1])
    groups: list[list[int]] = [[]]
    for i in order:
        rows = sum(len(feeds[j]["attention_mask"]) for j in groups[-1]) + len(feeds[i]["attention_mask"])
        if groups[-1] and (rows * feeds[i]["attention_mask"].shape[1] > max_tokens or rows > max_rows):
            groups.append([])
        groups[-1].append(i)
    return [g for g in groups if g]


def _stack(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One right-padded batch from several feeds; the padding is masked out (attention_mask 0)."""
    length = max(f["attention_mask"].shape[1] for f in feeds)
    return {k: np.concatenate([np.pad(f[k], ((0, 0), (0, length - f[k].shape[1]))) if f[k].ndim == 2 else f[k]
                               for f in feeds]) for k in feeds[0]}  # a decoder's empty KV cache is not padded


def _token_budget(model: Model, probes: list[str], share: float) -> int:
    """Tokens whose recorded MatMul inputs take about `share` of the model's weights in memory (128..2048):
    the calibration run's memory stays a fraction of the model's, whatever its size."""
    weights = sum(t.nbytes for t in model.weights.values())
    per_token = 4 * sum(model.shape(n.input[1])[0] for n in model.weighted_matmuls() if n.input[0] in probes)
    return int(min(2048, max(128, share * weights / max(per_token, 1))))


def collect(model_file: Path, calibration: Calibration, *, model: Model | None = None, sample_tokens: int = 512,
            threads: int | None = None) -> None:
    """Fill calibration.reference, .peaks and .activations by running the FP32 model once with extra outputs.

    FP32 answers do not depend on the batch (only INT8's activation ranges do), so the reference runs in
    padded batches of similar length, which keeps the matrix multiplications efficient on large models.
    The inputs of every MatMul give their channels' peak |x| over all real tokens, and a small sample
    (`sample_tokens`, spread evenly over the batches) for the sensitivity ranking. The model with those extra
    outputs is a small file beside `model_file` that refers to its weights where they lie: no second copy.
    """
    from app.core.tasks.runner import new_session

    model_file = Path(model_file)
    model = model or Model.read(model_file)
    outputs = [o.name for o in model.proto.graph.output]
    # Outputs with a sequence axis are cut back to each example's own length.
    per_token = {o.name for o in model.proto.graph.output if len(o.type.tensor_type.shape.dim) > 1
                 and o.type.tensor_type.shape.dim[1].dim_param == "sequence_length"}
    probes = sorted({n.input[0] for n in model.weighted_matmuls()})
    probe_file = model_file.with_name(f".probe-{os.getpid()}.onnx")
    try:
        onnx.save(model.probe(model_file.parent, probes), str(probe_file))
        session = new_session(str(probe_file), threads, prepack=False)  # one pass: no packed second copy
    finally:
        probe_file.unlink(missing_ok=True)  # the session has read it
    feeds = calibration.feeds
    budget = _token_budget(model, probes, 0.25)
    groups = _batches(feeds, max_tokens=budget)
    sample_tokens = min(sample_tokens, budget)
    samples: dict[str, list[np.ndarray]] = {p: [] for p in probes}
    peaks: dict[str, np.ndarray] = {}
    per_example: set[str] = set()
    rng = np.random.default_rng(0)
    per_batch = max(1, sample_tokens // max(1, len(groups)))
    reference: list[dict | None] = [None] * len(feeds)
    for group in groups:
        batch = _stack([feeds[i] for i in group])
        results = dict(zip(outputs + probes, session.run(outputs + probes, batch)))
        row = 0
        for i in group:
            rows, length = feeds[i]["attention_mask"].shape
            reference[i] = {k: results[k][row:row + rows, :length] if k in per_token else results[k][row:row + rows]
                            for k in outputs}
            row += rows
        real = np.flatnonzero(batch["attention_mask"])  # real tokens in the flattened (batch × seq)
        for p in probes:
            x = results.pop(p)
            if x.ndim == 3:
                x = x.reshape(-1, x.shape[-1])[real]  # (tokens, channels)
            else:
                per_example.add(p)  # pooler, classifier: one row per example
                x = x.reshape(-1, x.shape[-1])
            peak = np.abs(x).max(axis=0)
            peaks[p] = peak if p not in peaks else np.maximum(peaks[p], peak)
            samples[p].append(x[np.sort(rng.choice(len(x), size=min(per_batch, len(x)), replace=False))])
    calibration.per_example = per_example
    calibration.reference = reference
    calibration.peaks = peaks
    calibration.activations = {p: np.concatenate(v) for p, v in samples.items()}
