"""Dynamic INT8 quantization with ONNX Runtime, guarded by an accuracy check against FP32.

On CPUs without VNNI, INT8 hurts accuracy through a few places: activation outlier channels (a handful
of channels 10x larger than the rest squash every other channel into a few u8 steps), per-tensor
embedding tables, and u8×s8 saturation. The guard measures instead of guessing:

1. Run the FP32 model on a calibration set, recording outputs and the inputs of every MatMul.
2. Rewrite the graph, exactly in FP32: outlier channels of LayerNorm-fed MatMul inputs are scaled into
   range through the LayerNorm (weight rows scaled back up), the other inputs' outlier channels go through
   a tiny FP32 side path (x·W = x_outliers·W_outliers + x_rest·W_rest), and embedding tables become int8
   with one scale per row.
3. Try candidate settings, fastest first (fewer extra ops is faster): quantize (DynamicQuantizeMatMul,
   written directly), run the calibration set one example per call, compare with FP32 (top-1 agreement,
   output cosine, QA span agreement) and keep the first one that meets the target. If none does, the
   model is kept in FP32 with an explanation.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from app.core.errors import QuantizationError
from app.core.progress import ProgressFn, check_cancel, report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeConfig:
    """One candidate setting (experts can force one)."""

    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: no u8×s8 saturation on AVX2 without VNNI, less precision
    outlier_ratio: float = 4.0  # a channel is an outlier when its peak |x| exceeds ratio × the median channel's
    # A MatMul input fed by a LayerNorm that has outliers gets every channel above `scale_ratio` × the median
    # channel's peak scaled down to it through the LayerNorm's gamma/beta (the weight rows scaled up: exact).
    scale_outliers: bool = True
    scale_ratio: float = 2.0
    # The outlier channels of the other MatMul inputs (GELU outputs) go through a small FP32 side path.
    split_outliers: bool = True
    max_outlier_channels: int = 8
    quantize_embeddings: bool = True  # int8 embedding tables with per-row scales
    keep_fp32: tuple[str, ...] = ()  # node names left in FP32 (the most sensitive ones)

    def __post_init__(self):
        if self.weight_type not in ("int8", "uint8"):
            raise ValueError(f"weight_type: {self.weight_type!r} is not 'int8' or 'uint8'")
        for name in ("outlier_ratio", "scale_ratio"):
            if getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be above 1 (got {getattr(self, name)})")
        if self.max_outlier_channels < 0:
            raise ValueError(f"max_outlier_channels: must be >= 0 (got {self.max_outlier_channels})")

    def describe(self) -> str:
        parts = [f"{self.weight_type} weights", "per-channel" if self.per_channel else "per-tensor"]
        if self.reduce_range:
            parts.append("reduced range")
        if self.scale_outliers or self.split_outliers:
            how = [f"scaled to {self.scale_ratio:g}x after LayerNorms"] if self.scale_outliers else []
            how += [f"up to {self.max_outlier_channels} in FP32 elsewhere"] if self.split_outliers else []
            parts.append(f"outlier channels (> {self.outlier_ratio:g}x the median) {' and '.join(how)}")
        if not self.quantize_embeddings:
            parts.append("FP32 embeddings")
        if self.keep_fp32:
            parts.append(f"{len(self.keep_fp32)} sensitive node(s) in FP32")
        return ", ".join(parts)


@dataclass(frozen=True)
class GuardTarget:
    min_agreement: float = 0.995  # top-1 / span agreement with FP32 on the calibration set
    min_cosine: float = 0.995  # mean cosine between INT8 and FP32 outputs

    def __post_init__(self):
        for name in ("min_agreement", "min_cosine"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be within 0..1 (got {getattr(self, name)})")


@dataclass(frozen=True)
class Agreement:
    agreement: float  # fraction of examples with the same top-1 label / an overlapping answer span
    cosine: float  # mean cosine similarity of the outputs (class scores; QA start/end logits)
    examples: int

    def meets(self, target: GuardTarget) -> bool:
        return self.agreement >= target.min_agreement and self.cosine >= target.min_cosine


@dataclass(frozen=True)
class Candidate:
    config: QuantizeConfig
    agreement: Agreement
    passed: bool
    seconds: float
    outlier_channels: dict[str, int] = field(default_factory=dict)  # MatMul → outlier channels scaled or split

    def to_dict(self) -> dict:
        return {"settings": self.config.describe(), "config": asdict(self.config), "agreement": asdict(self.agreement),
                "passed": self.passed, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class QuantizeResult:
    chosen: Candidate | None  # None: no setting met the target; the model stays FP32
    candidates: tuple[Candidate, ...]
    target: GuardTarget
    calibration: str  # what the guard ran ("built-in, 100 texts" or the user's file)
    onnx_bytes: int = 0
    outlier_channels: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.chosen is not None and self.chosen.passed

    def explain(self) -> str:
        if self.chosen:
            a = self.chosen.agreement
            below = "" if self.chosen.passed else " That is below the target; these settings were forced."
            return (f"INT8 ({self.chosen.config.describe()}) gives the same answer as FP32 on "
                    f"{a.agreement:.2%} of {a.examples} calibration examples (mean score cosine {a.cosine:.4f}).{below}")
        best = max(self.candidates, key=lambda c: (c.agreement.agreement, c.agreement.cosine), default=None)
        got = f"; the best setting reached {best.agreement.agreement:.2%} (cosine {best.agreement.cosine:.4f})" if best else ""
        return (f"No INT8 setting met the target (agreement >= {self.target.min_agreement:.2%}, cosine >= "
                f"{self.target.min_cosine:.3f}){got}. The model is kept in FP32 so it never gives wrong answers; "
                "lower the target or force settings if you accept the difference.")

    def to_dict(self) -> dict:
        return {"passed": self.passed, "chosen": self.chosen.to_dict() if self.chosen else None,
                "candidates": [c.to_dict() for c in self.candidates], "target": asdict(self.target),
                "calibration": self.calibration, "onnx_bytes": self.onnx_bytes,
                "outlier_channels": self.outlier_channels, "explanation": self.explain()}


# --- calibration: FP32 outputs and the activations feeding each quantizable node ---------------------------

@dataclass
class Calibration:
    feeds: list[dict[str, np.ndarray]]  # batches of model inputs
    reference: list[dict[str, np.ndarray]] = field(default_factory=list)  # FP32 outputs per batch
    peaks: dict[str, np.ndarray] = field(default_factory=dict)  # node input → (channels,) max |x| over all tokens
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # node input → (tokens, channels) sample
    per_example: set[str] = field(default_factory=set)  # node inputs with one row per example (pooler, head)
    description: str = ""


def _weighted_nodes(model) -> list:
    """MatMul nodes whose weight is an initializer: the ones quantization touches."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def _consumers(model) -> dict[str, list]:
    """Tensor name → the nodes that read it."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return consumers


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


def collect(model_file: Path | bytes, calibration: Calibration, *, model=None, sample_tokens: int = 512,
            threads: int | None = None) -> None:
    """Fill calibration.reference, .peaks and .activations by running the FP32 model once with extra outputs.

    FP32 answers do not depend on the batch (only INT8's activation ranges do), so the reference runs in
    padded batches of similar length, which keeps the matrix multiplications efficient on large models.
    The inputs of every MatMul give their channels' peak |x| over all real tokens, and a small sample
    (`sample_tokens`, spread evenly over the batches) for the sensitivity ranking. `model_file` is the
    model's path or its bytes; `model` its ModelProto when the caller has it already.
    """
    import onnx

    from app.core.export.graph import with_extra_outputs
    from app.core.tasks.runner import new_session

    raw = model_file if isinstance(model_file, bytes) else Path(model_file).read_bytes()
    if model is None:
        model = onnx.load_model_from_string(raw)
    outputs = [o.name for o in model.graph.output]
    # Outputs with a sequence axis are cut back to each example's own length.
    per_token = {o.name for o in model.graph.output if len(o.type.tensor_type.shape.dim) > 1
                 and o.type.tensor_type.shape.dim[1].dim_param == "sequence_length"}
    probes = sorted({n.input[0] for n in _weighted_nodes(model)})
    session = new_session(with_extra_outputs(raw, [onnx.helper.make_tensor_value_info(p, onnx.TensorProto.FLOAT, None)
                                                   for p in probes]), threads)
    del raw
    feeds = calibration.feeds
    groups = _batches(feeds)
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
            x = results[p].reshape(-1, results[p].shape[-1])
            if results[p].ndim == 3:
                x = x[real]  # (tokens, channels)
            else:
                per_example.add(p)  # pooler, classifier: one row per example
            peak = np.abs(x).max(axis=0)
            peaks[p] = peak if p not in peaks else np.maximum(peaks[p], peak)
            samples[p].append(x[np.sort(rng.choice(len(x), size=min(per_batch, len(x)), replace=False))])
    calibration.per_example = per_example
    calibration.reference = reference
    calibration.peaks = peaks
    calibration.activations = {p: np.concatenate(v) for p, v in samples.items()}


# --- graph rewrites ------------------------------------------------------------------------------------------

def outlier_channels(peak: np.ndarray, ratio: float, limit: int) -> list[int]:
    """Channels whose peak |x| exceeds ratio × the median channel's peak (largest first, at most `limit`)."""
    median = float(np.median(peak)) or 1e-12
    order = np.argsort(peak)[::-1][:limit]
    return [int(c) for c in order if peak[c] > ratio * median]


def _scale_through_layer_norms(model, config: QuantizeConfig, calibration: Calibration, inits: dict,
                               skip: set[str]) -> dict[str, int]:
    """Scale the outlier channels of LayerNorm-fed MatMul inputs into range; returns node → channels scaled.

    LayerNorm(x)·γ/s + β/s feeds the MatMuls, whose weight rows are multiplied by s: exact in FP32, and the
    activation's per-tensor INT8 range is no longer set by a few channels. The residual and every other
    consumer get the LayerNorm's output back through one Mul by s.
    """
    from onnx import helper, numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model)
    scaled, restores = {}, {}
    for n in _weighted_nodes(model):
        x = n.input[0]
        norm = producers.get(x)
        if (n.name in skip or x in restores or norm is None or norm.op_type != "LayerNormalization"
                or len(norm.input) < 3 or not {norm.input[1], norm.input[2]} <= inits.keys()):
            continue
        peak = calibration.peaks[x]
        if not outlier_channels(peak, config.outlier_ratio, 1):  # no outliers: the Mul would cost more than it gives
            continue
        s = np.maximum(peak / (config.scale_ratio * (float(np.median(peak)) or 1e-12)), 1.0).astype(np.float32)
        for name in norm.input[1:3]:
            inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]) / s, name))
        scaled_x = x + "/outliers_scaled"
        norm.output[0] = scaled_x
        model.graph.initializer.append(numpy_helper.from_array(s, x + "/outlier_scale"))
        restores[x] = helper.make_node("Mul", [scaled_x, x + "/outlier_scale"], [x], name=norm.name + "/restore")
        for c in consumers[x]:
            if c.op_type == "MatMul" and c.input[1] in inits and c.name not in skip:
                w = numpy_helper.to_array(inits[c.input[1]])  # (in, out)
                inits[c.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], c.input[1]))
                c.input[0] = scaled_x
                scaled[c.name] = int((s > 1).sum())
    nodes = []
    for n in model.graph.node:
        nodes.append(n)
        if n.op_type == "LayerNormalization" and n.output[0].endswith("/outliers_scaled"):
            nodes.append(restores[n.output[0].removesuffix("/outliers_scaled")])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return scaled


def _rewrite(model, config: QuantizeConfig, calibration: Calibration,
             head: set[str] = frozenset()) -> tuple[list[str], dict[str, int]]:
    """Outlier scaling and splitting, and per-row embedding quantization, in place.

    Returns the FP32 side-path nodes and, per MatMul, how many outlier channels were scaled or split.
    `head` names nodes left alone (they stay FP32).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    skip = set(config.keep_fp32) | set(head)
    treated = _scale_through_layer_norms(model, config, calibration, inits, skip) if config.scale_outliers else {}
    nodes, side_nodes = [], []
    tied: dict[str, np.ndarray] = {}  # embedding table → its per-row scales, once quantized
    tied_heads: dict[str, str] = {}  # Transpose output → the table it transposes
    for n in model.graph.node:
        if (config.split_outliers and n.op_type == "MatMul" and n.input[1] in inits and n.input[0] in calibration.peaks
                and n.name not in skip and n.name not in treated):
            channels = outlier_channels(calibration.peaks[n.input[0]], config.outlier_ratio,
                                        config.max_outlier_channels)
            if channels:
                #  x ─ Mul(keep mask) ─ MatMul(W, rest rows; INT8) ─────────┐
                #  x ─ Gather(outlier channels) ─ MatMul(W outlier rows; FP32) ┴─ Add ─►
                w = numpy_helper.to_array(inits[n.input[1]]).copy()  # (in, out)
                w_out = w[channels].copy()
                w[channels] = 0
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(w, n.input[1]))
                keep = np.ones(w.shape[0], np.float32)
                keep[channels] = 0
                p = n.name.rsplit("/", 1)[0] + "/outliers"
                model.graph.initializer.extend([numpy_helper.from_array(keep, p + "/keep"),
                                                numpy_helper.from_array(np.array(channels, np.int64), p + "/index"),
                                                numpy_helper.from_array(w_out, p + "/weight")])
                rest, part = p + "/rest", n.output[0] + "/int8_part"
                nodes += [helper.make_node("Mul", [n.input[0], p + "/keep"], [rest], name=p + "/Mul"),
                          helper.make_node("MatMul", [rest, n.input[1]], [part], name=n.name),
                          helper.make_node("Gather", [n.input[0], p + "/index"], [p + "/x"], name=p + "/Gather", axis=-1),
                          helper.make_node("MatMul", [p + "/x", p + "/weight"], [p + "/y"], name=p + "/MatMul"),
                          helper.make_node("Add", [part, p + "/y"], [n.output[0]], name=p + "/Add")]
                side_nodes.append(p + "/MatMul")
                treated[n.name] = len(channels)
                continue
        if config.quantize_embeddings and n.op_type == "Gather" and n.input[0] in inits and n.name not in skip:
            table = numpy_helper.to_array(inits[n.input[0]])
            if table.ndim == 2 and table.shape[0] > 2:
                #  ids ─ Gather(int8 table) ─ Cast ─┐
                #  ids ─ Gather(row scales) ────────┴─ Mul ─►   symmetric int8, one scale per row
                scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0  # (rows, 1)
                q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
                name = n.input[0]
                inits[name].CopyFrom(numpy_helper.from_array(q, name + ".int8"))
                inits[name].name = name + ".int8"
                model.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), name + ".scale"))
                p = n.name.rsplit("/", 1)[0] + "/int8"
                nodes += [helper.make_node("Gather", [name + ".int8", n.input[1]], [p + "/q"], name=p + "/Gather_q"),
                          helper.make_node("Cast", [p + "/q"], [p + "/qf"], name=p + "/Cast", to=1),
                          helper.make_node("Gather", [name + ".scale", n.input[1]], [p + "/s"], name=p + "/Gather_scale"),
                          helper.make_node("Mul", [p + "/qf", p + "/s"], [n.output[0]], name=p + "/Mul")]
                tied[name] = scale
                continue
        if n.op_type == "Transpose" and n.input[0] in tied:  # a tied LM head reads the int8 table transposed
            tied_heads[n.output[0]] = n.input[0]
            nodes.append(helper.make_node("Transpose", [n.input[0] + ".int8"], [n.output[0] + ".int8"], name=n.name,
                                          perm=[1, 0]))
            continue
        if n.op_type == "MatMul" and n.input[1] in tied_heads:
            nodes += _tied_head(model, n, tied_heads[n.input[1]], tied[tied_heads[n.input[1]]], n.name in skip)
            continue
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return side_nodes, treated


def _tied_head(model, n, table: str, scale: np.ndarray, keep_fp32: bool) -> list:
    """The MatMul of an LM head tied to an int8 embedding table, which the file holds once.

      x ─ DynamicQuantizeMatMul(Transpose(table int8) [H,V], row scales [V]) ─►   (the Transpose is folded at load)
      kept FP32:  x ─ MatMul(Transpose(table int8) · row scalesᵀ) ─►
    """
    from onnx import helper, numpy_helper

    w = n.input[1] + ".int8"
    if keep_fp32:
        cast = helper.make_node("Cast", [w], [w + "/float"], name=n.name + "/dequantize/Cast", to=1)
        model.graph.initializer.append(numpy_helper.from_array(scale.reshape(1, -1).astype(np.float32),
                                                               table + ".scale_row"))
        deq = helper.make_node("Mul", [w + "/float", table + ".scale_row"], [w + "/dequantized"],
                               name=n.name + "/dequantize/Mul")
        return [cast, deq, helper.make_node("MatMul", [n.input[0], w + "/dequantized"], list(n.output), name=n.name)]
    model.graph.initializer.extend([
        numpy_helper.from_array(scale.reshape(-1).astype(np.float32), table + ".scale_column"),
        numpy_helper.from_array(np.zeros(scale.size, np.int8), table + ".zero_point")])
    return [helper.make_node("DynamicQuantizeMatMul", [n.input[0], w, table + ".scale_column", table + ".zero_point"],
                             list(n.output), name=n.name, domain="com.microsoft")]


def _head_nodes(model, calibration: Calibration) -> set[str]:
    """Task-head MatMuls (pooler, classifier, QA span scorer): one row per example or a handful of outputs.

    They cost nothing in FP32 and their outputs are the answer itself, so they are never quantized.
    """
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name for n in _weighted_nodes(model) if n.input[0] in calibration.per_example
            or inits[n.input[1]].dims[-1] < 32}


def sensitivity(model, calibration: Calibration, config: QuantizeConfig) -> list[tuple[str, float]]:
    """Each quantizable node's relative output error when only it is fake-quantized (worst first)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scores = []
    for n in _weighted_nodes(model):
        x = calibration.activations.get(n.input[0])
        if x is None:
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)  # (in, out)
        if config.split_outliers:
            channels = outlier_channels(calibration.peaks[n.input[0]], config.outlier_ratio,
                                        config.max_outlier_channels)
            x = x.copy()
            x[:, channels] = 0
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        step = (hi - lo) / 255 or 1.0
        xq = np.round((x - lo) / step) * step + lo
        levels = 63 if config.reduce_range else 127
        if config.per_channel:
            ws = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / levels
        else:
            ws = max(float(np.abs(w).max()), 1e-12) / levels
        wq = np.round(w / ws) * ws
        exact = x @ w
        err = float(np.linalg.norm(exact - xq @ wq) / (np.linalg.norm(exact) or 1.0))
        scores.append((n.name, err))
    return sorted(scores, key=lambda s: -s[1])


# --- comparing INT8 with FP32 --------------------------------------------------------------------------------

def compare(spec, reference: list[dict], outputs: list[dict], feeds: list[dict]) -> Agreement:
    """Agreement and mean cosine between INT8 outputs and the FP32 reference, as the model's task measures them."""
    from app.core.tasks import get_task

    same, cos = get_task(spec.task).agreement(spec, reference, outputs, feeds)
    return Agreement(float(np.mean(same)), float(np.mean(cos)), len(same))


# --- the guard -----------------------------------------------------------------------------------------------

def validate(int8_model: Path | bytes, calibration: Calibration, *, spec,
             target: GuardTarget | None = None, threads: int | None = None,
             cancel: threading.Event | None = None, chunk: int = 32) -> Agreement:
    """Compare the INT8 model with the FP32 reference on the calibration set.

    With a target, stops as soon as more examples disagree than the target allows: a failing setting
    costs a fraction of a full pass (the agreement then covers the examples run so far).
    """
    from app.core.tasks import get_task
    from app.core.tasks.runner import new_session

    session = new_session(int8_model if isinstance(int8_model, bytes) else str(int8_model), threads)
    names = [o.name for o in session.get_outputs()]
    if get_task(spec.task).whole_set_agreement:  # e.g. nearest neighbours among all the examples
        chunk, target = len(calibration.feeds), None
    total = sum(len(f["attention_mask"]) for f in calibration.feeds)
    allowed = None if target is None else (1 - target.min_agreement) * total
    same = cosine = examples = 0.0
    for lo in range(0, len(calibration.feeds), chunk):
        check_cancel(cancel)
        feeds = calibration.feeds[lo:lo + chunk]
        part = compare(spec, calibration.reference[lo:lo + chunk],
                       [dict(zip(names, session.run(None, f))) for f in feeds], feeds)
        same, cosine = same + part.agreement * part.examples, cosine + part.cosine * part.examples
        examples += part.examples
        if allowed is not None and examples - same > allowed + 1e-9:
            break
    return Agreement(same / examples, cosine / examples, int(examples)) if examples else Agreement(1.0, 1.0, 0)


def candidate_ladder(base: QuantizeConfig = QuantizeConfig()) -> list[QuantizeConfig]:
    """Settings to try, fastest first.

    Every extra op costs time on small models, so the ladder starts with everything in INT8 and no outlier
    handling, then scales LayerNorm outlier channels (one Mul per LayerNorm) and sends ever more of the
    other outlier channels through FP32 side paths (four small ops per MatMul).
    """
    plain = replace(base, scale_outliers=False, split_outliers=False)
    # The last rung has 7-bit weights: on AVX2 CPUs without VNNI, u8×s8 products can saturate in int16.
    return [plain, replace(base, outlier_ratio=6.0), base,
            replace(base, outlier_ratio=2.0, max_outlier_channels=16, reduce_range=True)]


def keep_fp32_ladder(order: list[str], base: QuantizeConfig = QuantizeConfig()) -> list[QuantizeConfig]:
    """The last resort, slower rungs: ever more of the most sensitive nodes (`order`) entirely in FP32."""
    ladder = []
    for k in (1, 2, 3, 4, 6, 8, 12, 16, 24):
        if k > max(1, len(order) // 3):
            break
        ladder.append(replace(base, keep_fp32=tuple(order[:k])))
    return ladder


def _quantize_matmuls(model, config: QuantizeConfig, skip: set[str]) -> None:
    """x·W → DynamicQuantizeMatMul, in place: W int8 per output column (or per tensor), x u8 at run time.

    This is what `onnxruntime.quantization.quantize_dynamic` produces once ONNX Runtime has fused its
    MatMulInteger chain, written directly: no shape inference and no model copies, seconds instead of
    minutes on large models.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers = _consumers(model)
    axis = 0 if config.per_channel else None  # W is (in, out): one scale per output column
    levels = {("int8", False): 127, ("int8", True): 63, ("uint8", False): 255, ("uint8", True): 127}
    qmax = levels[config.weight_type, config.reduce_range]
    quantized, folded = set(), set()
    for n in model.graph.node:
        if n.op_type != "MatMul" or n.name in skip or n.input[1] not in inits:
            continue
        name = n.input[1]
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        if config.weight_type == "int8":  # symmetric, zero point 0
            scale = np.maximum(np.abs(w).max(axis=axis), 1e-12) / qmax
            zero = np.zeros_like(scale, dtype=np.int8)
            q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
        else:  # asymmetric uint8
            lo, hi = np.minimum(w.min(axis=axis), 0), np.maximum(w.max(axis=axis), 0)
            scale = np.maximum(hi - lo, 1e-12) / qmax
            zero = np.clip(np.round(-lo / scale), 0, qmax).astype(np.uint8)
            q = np.clip(np.round(w / scale) + zero, 0, qmax).astype(np.uint8)
        model.graph.initializer.extend([numpy_helper.from_array(q, name + "_quantized"),
                                        numpy_helper.from_array(np.asarray(scale, np.float32), name + "_scale"),
                                        numpy_helper.from_array(np.asarray(zero), name + "_zero_point")])
        inputs, outputs = [n.input[0], name + "_quantized", name + "_scale", name + "_zero_point"], list(n.output)
        after = consumers.get(n.output[0], [])
        if (len(after) == 1 and after[0].op_type == "Add" and after[0].input[1] in inits
                and list(inits[after[0].input[1]].dims) == [w.shape[1]]):  # MatMul + Add(bias): one op
            inputs.append(after[0].input[1])
            outputs = list(after[0].output)
            folded.add(id(after[0]))
        n.CopyFrom(helper.make_node("DynamicQuantizeMatMul", inputs, outputs, name=n.name, domain="com.microsoft"))
        quantized.add(name)
    kept_nodes = [n for n in model.graph.node if id(n) not in folded]
    del model.graph.node[:]
    model.graph.node.extend(kept_nodes)
    still_used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name not in quantized or i.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def quantize_model(fp32_path: Path, out_path: Path, calibration: Calibration, *, spec,
                   target: GuardTarget = GuardTarget(),
                   force: QuantizeConfig | None = None, threads: int | None = None,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> QuantizeResult:
    """Quantize `fp32_path` to `out_path` with the fastest setting that meets `target` on the calibration set.

    With `force`, that one setting is used and measured (and written even if below target).
    When nothing meets the target, `out_path` is not written and the result says why.
    """
    import onnx

    try:
        report(progress, "quantize", 0, None, "running the FP32 model on the calibration set")
        raw = Path(fp32_path).read_bytes()
        base = onnx.load_model_from_string(raw)
        if not calibration.reference:
            collect(raw, calibration, model=base, threads=threads)
        del raw
        check_cancel(cancel)
        head = _head_nodes(base, calibration)
        candidates: list[Candidate] = []

        def attempt(config: QuantizeConfig, step: int, steps: int | None) -> bytes:
            """Quantize with `config`, validate it, record the candidate; returns the INT8 model."""
            check_cancel(cancel)
            report(progress, "quantize", step, steps, f"trying {config.describe()}")
            start = time.perf_counter()
            model = onnx.ModelProto()
            model.CopyFrom(base)
            side_nodes, treated = _rewrite(model, config, calibration, head)
            _quantize_matmuls(model, config, set(config.keep_fp32) | set(side_nodes) | head)
            int8 = model.SerializeToString()
            del model
            report(progress, "validate", step, steps, f"comparing with FP32: {config.describe()}")
            agreement = validate(int8, calibration, spec=spec, target=None if force else target, threads=threads,
                                 cancel=cancel)
            candidates.append(Candidate(config, agreement, agreement.meets(target), time.perf_counter() - start,
                                        treated))
            log.info("candidate %s: agreement %.4f cosine %.5f", config.describe(), agreement.agreement,
                     agreement.cosine)
            return int8

        def first_passing(ladder: list[QuantizeConfig]) -> bytes | None:
            for step, config in enumerate(ladder):
                int8 = attempt(config, step, len(ladder))
                if candidates[-1].passed or force:  # forced settings are kept even below target: the expert chose
                    return int8
            return None

        int8 = first_passing([force] if force else candidate_ladder())
        if int8 is None and not force:  # the last resort; the sensitivity ranking is costly, so only now
            ranked = sensitivity(base, calibration, QuantizeConfig())
            int8 = first_passing(keep_fp32_ladder([name for name, _ in ranked if name not in head]))
        chosen = candidates[-1] if int8 is not None else None
        if int8 is not None:
            out_path.write_bytes(int8)
        report(progress, "validate", 1, 1, "done")
        return QuantizeResult(chosen=chosen, candidates=tuple(candidates), target=target,
                              calibration=calibration.description, onnx_bytes=len(int8) if int8 else 0,
                              outlier_channels=chosen.outlier_channels if chosen else {})
    except (OSError, RuntimeError, ValueError) as e:
        if isinstance(e, QuantizationError):
            raise
        out_path.unlink(missing_ok=True)
        raise QuantizationError(f"Quantizing {fp32_path} failed: {e}. The FP32 model is unaffected.") from e
