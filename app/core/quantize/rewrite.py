"""Rewrites that make a graph quantize well, exact in FP32: outlier channels scaled through LayerNorms or split
into small FP32 side paths, and int8 embedding tables with one scale per row (a tied LM head reads the same table).

Each rewrite changes the node list and replaces weights by lazy transformed views (app/core/quantize/model.py).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from app.core.onnxfile import LazyTensor
from app.core.quantize.calibrate import Calibration
from app.core.quantize.config import QuantizeConfig
from app.core.quantize.model import Model


def outlier_channels(peak: np.ndarray, ratio: float, limit: int) -> list[int]:
    """Channels whose peak |x| exceeds ratio × the median channel's peak (largest first, at most `limit`)."""
    median = float(np.median(peak)) or 1e-12
    order = np.argsort(peak)[::-1][:limit]
    return [int(c) for c in order if peak[c] > ratio * median]


def _scale_through_layer_norms(model: Model, config: QuantizeConfig, calibration: Calibration,
                               skip: set[str]) -> dict[str, int]:
    """Scale the outlier channels of LayerNorm-fed MatMul inputs into range; returns node → channels scaled.

    LayerNorm(x)·γ/s + β/s feeds the MatMuls, whose weight rows are multiplied by s: exact in FP32, and the
    activation's per-tensor INT8 range is no longer set by a few channels. The residual and every other
    consumer get the LayerNorm's output back through one Mul by s.
    """
    producers = model.producers()
    consumers = model.consumers()
    scaled, restores = {}, {}
    for n in model.weighted_matmuls():
        x = n.input[0]
        norm = producers.get(x)
        if (n.name in skip or x in restores or norm is None or norm.op_type != "LayerNormalization"
                or len(norm.input) < 3 or not {norm.input[1], norm.input[2]} <= model.weights.keys()):
            continue
        peak = calibration.peaks[x]
        if not outlier_channels(peak, config.outlier_ratio, 1):  # no outliers: the Mul would cost more than it gives
            continue
        s = np.maximum(peak / (config.scale_ratio * (float(np.median(peak)) or 1e-12)), 1.0).astype(np.float32)
        for name in norm.input[1:3]:
            model.transform(name, lambda v, s=s: v / s)
        scaled_x = x + "/outliers_scaled"
        norm.output[0] = scaled_x
        model.add(s, x + "/outlier_scale")
        restores[x] = helper.make_node("Mul", [scaled_x, x + "/outlier_scale"], [x], name=norm.name + "/restore")
        for c in consumers[x]:
            if c.op_type == "MatMul" and c.input[1] in model.weights and c.name not in skip:
                model.transform(c.input[1], lambda w, s=s: w * s[:, None])  # (in, out)
                c.input[0] = scaled_x
                scaled[c.name] = int((s > 1).sum())
    nodes = []
    for n in model.nodes:
        nodes.append(n)
        if n.op_type == "LayerNormalization" and n.output[0].endswith("/outliers_scaled"):
            nodes.append(restores[n.output[0].removesuffix("/outliers_scaled")])
    model.set_nodes(nodes)
    return scaled


def _with_values(v: np.ndarray, index: list[int], value: float) -> np.ndarray:
    v = v.copy()
    v[index] = value
    return v


def _per_row_int8(table: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (|q| <= levels) with one scale per row: (int8 table, (rows, 1) float32 scales)."""
    scale = (np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / levels).astype(np.float32)
    return np.clip(np.round(table / scale), -levels, levels).astype(np.int8), scale


def rewrite(model: Model, config: QuantizeConfig, calibration: Calibration,
            head: set[str] = frozenset()) -> tuple[list[str], dict[str, int]]:
    """Outlier scaling and splitting, and per-row embedding quantization, in place.

    Returns the FP32 side-path nodes and, per MatMul, how many outlier channels were scaled or split.
    `head` names nodes left alone (they stay FP32).
    """
    skip = set(config.keep_fp32) | set(head)
    treated = _scale_through_layer_norms(model, config, calibration, skip) if config.scale_outliers else {}
    nodes, side_nodes = [], []
    quantized_tables: set[str] = set()
    tied_heads: dict[str, str] = {}  # Transpose output → the table it transposes
    # A table that a tied LM head multiplies by is an int8 weight of a u8×s8 product there: where the config
    # avoids saturation (uint8 or 7-bit weights), its values stay within 7 bits (|q| <= 63).
    head_tables = {n.input[0] for n in model.nodes if n.op_type == "Transpose" and n.input[0] in model.weights}
    exact = config.weight_type == "uint8" or config.reduce_range
    consumers = model.consumers()
    producers = model.producers()
    later: dict[int, list] = {}  # a node further on → what takes its place (a folded bias Add: nothing)
    for n in model.nodes:
        if id(n) in later:
            nodes += later.pop(id(n))
            continue
        if (config.split_outliers and n.op_type == "MatMul" and n.input[1] in model.weights
                and n.input[0] in calibration.peaks and n.name not in skip and n.name not in treated):
            channels = outlier_channels(calibration.peaks[n.input[0]], config.outlier_ratio,
                                        config.max_outlier_channels)
            if channels:
                split, side = _split_outliers(model, n, channels, consumers, producers, later)
                nodes += split
                side_nodes.append(side)
                treated[n.name] = len(channels)
                continue
        if (config.quantize_embeddings and n.op_type == "Gather" and n.input[0] in model.weights
                and n.name not in skip and len(model.shape(n.input[0])) == 2 and model.shape(n.input[0])[0] > 2):
            # Symmetric int8, one scale per row. A table an LM head also reads stays int8 for its MatMul:
            #  ids ─ Gather(int8 table) ─ Cast ─┐
            #  ids ─ Gather(row scales) ────────┴─ Mul ─►
            # Any other is stored around 128 and read by one op (a block as wide as the row: the same numbers),
            # where those four cost MiniLM 1.5% of a 16-token call:
            #  ids ─ GatherBlockQuantized(uint8 table, row scales) ─►
            name, p = n.input[0], n.name.rsplit("/", 1)[0] + "/int8"
            tied = name in head_tables
            if name not in quantized_tables:
                _add_table(model, name, 63 if tied and exact else 127, np.int8 if tied else np.uint8)
                quantized_tables.add(name)
            if tied:
                nodes += [helper.make_node("Gather", [name + ".int8", n.input[1]], [p + "/q"], name=p + "/Gather_q"),
                          helper.make_node("Cast", [p + "/q"], [p + "/qf"], name=p + "/Cast", to=1),
                          helper.make_node("Gather", [name + ".scale", n.input[1]], [p + "/s"],
                                           name=p + "/Gather_scale"),
                          helper.make_node("Mul", [p + "/qf", p + "/s"], [n.output[0]], name=p + "/Mul")]
            else:
                nodes.append(helper.make_node("GatherBlockQuantized", [name + ".uint8", n.input[1], name + ".scale"],
                                              list(n.output), name=p + "/Gather_q", domain="com.microsoft",
                                              gather_axis=0, quantize_axis=1, bits=8,
                                              block_size=max(16, 1 << (model.shape(name)[1] - 1).bit_length())))
            continue
        if n.op_type == "Transpose" and n.input[0] in quantized_tables:  # a tied LM head reads the int8 table
            tied_heads[n.output[0]] = n.input[0]
            nodes.append(helper.make_node("Transpose", [n.input[0] + ".int8"], [n.output[0] + ".int8"], name=n.name,
                                          perm=[1, 0]))
            continue
        if n.op_type == "MatMul" and n.input[1] in tied_heads:
            nodes += _tied_head(model, n, tied_heads[n.input[1]], n.name in skip)
            continue
        nodes.append(n)
    model.set_nodes(nodes)
    return side_nodes, treated


def _split_outliers(model: Model, n, channels: list[int], consumers: dict, producers: dict,
                    later: dict[int, list]) -> tuple[list, str]:
    """The nodes that take the place of MatMul `n`, its outlier `channels` split off into FP32, and the name of
    the FP32 side MatMul (`later` gets what replaces the bias and residual Adds that follow it):

      x ─ Mul(keep mask) ─ MatMul(W, rest rows; INT8) ─ [Add(bias)] ──┐
      x ─ Gather(outlier channels) ─ MatMul(W outlier rows; FP32) ───────┴─ Add ─► [Add(residual)]

    Where x is a GELU with a bias that only this MatMul reads (the FFN's second MatMul), the GELU zeroes the
    outlier channels itself, from a bias of -10⁶ there (GELU(-10⁶) is exactly 0), and the side path takes the
    values before it: the same numbers without a Mul over the whole activation (~10 µs each of a 1.5 ms
    MiniLM call at 16 tokens):

      h ─ BiasGelu(bias, -10⁶ on the outlier channels) ─ MatMul(W, rest rows; INT8) ─ ...
      h ─ Gather(outlier channels) ─ BiasGelu(their bias) ─ MatMul(W outlier rows; FP32) ─ ...

    The bias Add that followed the MatMul comes first, where the INT8 op takes it in, and a residual Add that
    follows becomes one Sum with the side path's Add: two ops less per MatMul (an Add is ~8 µs of a 1.5 ms
    MiniLM call at 16 tokens).
    """
    x = n.input[0]
    w_out = model.load(n.input[1])[channels].astype(np.float32)  # (outliers, out)
    model.transform(n.input[1], lambda w: _with_values(w, channels, 0))
    p = n.name.rsplit("/", 1)[0] + "/outliers"
    model.add(np.array(channels, np.int64), p + "/index")
    model.add(w_out, p + "/weight")
    part, out = n.output[0] + "/int8_part", n.output[0]
    gelu = producers.get(x)
    if (gelu is not None and gelu.op_type in ("BiasGelu", "FastGelu") and len(gelu.input) == 2
            and gelu.input[1] in model.weights and len(consumers[x]) == 1):
        bias = model.weights[gelu.input[1]]
        model.add(bias.derived(lambda b: b[channels], name=p + "/bias", shape=(len(channels),)))
        model.add(bias.derived(lambda b: _with_values(b, channels, -1e6), name=p + "/gelu_bias"))
        gelu.input[1] = p + "/gelu_bias"
        nodes = [helper.make_node("MatMul", [x, n.input[1]], [part], name=n.name)]
        side = [helper.make_node("Gather", [gelu.input[0], p + "/index"], [p + "/h"], name=p + "/Gather", axis=-1),
                helper.make_node(gelu.op_type, [p + "/h", p + "/bias"], [p + "/x"], name=p + "/" + gelu.op_type,
                                 domain=gelu.domain)]
    else:
        model.add(_with_values(np.ones(model.shape(n.input[1])[0], np.float32), channels, 0), p + "/keep")
        nodes = [helper.make_node("Mul", [x, p + "/keep"], [p + "/rest"], name=p + "/Mul"),
                 helper.make_node("MatMul", [p + "/rest", n.input[1]], [part], name=n.name)]
        side = [helper.make_node("Gather", [x, p + "/index"], [p + "/x"], name=p + "/Gather", axis=-1)]
    bias = model.bias_add(n, consumers)
    if bias is not None:
        later[id(bias)] = []
        nodes.append(helper.make_node("Add", [part, bias.input[1]], [part + "/bias"], name=bias.name))
        part, out = part + "/bias", bias.output[0]
    nodes += side + [helper.make_node("MatMul", [p + "/x", p + "/weight"], [p + "/y"], name=p + "/MatMul")]
    after = consumers.get(out, [])
    if len(after) == 1 and after[0].op_type == "Add" and list(after[0].input).count(out) == 1:
        residual = after[0]
        other = next(i for i in residual.input if i != out)
        later[id(residual)] = [helper.make_node("Sum", [part, p + "/y", other], list(residual.output),
                                                name=residual.name)]
    else:
        nodes.append(helper.make_node("Add", [part, p + "/y"], [out], name=p + "/Add"))
    return nodes, p + "/MatMul"


def _add_table(model: Model, name: str, levels: int, dtype) -> None:
    """`name`.int8 (or .uint8, stored around 128: GatherBlockQuantized's zero point) and `name`.scale, the per-row
    symmetric table (|q| <= levels), computed together from the FP32 table when written."""
    source = model.weights[name]
    dtype = np.dtype(dtype)

    def table():
        q, scale = _per_row_int8(source.load(), levels)
        return ((q.astype(np.int16) + 128).astype(np.uint8) if dtype == np.uint8 else q), scale

    def part(i: int):
        return lambda: model.computed(("table", name), table)[i]

    model.add(LazyTensor(f"{name}.{dtype.name}", source.shape, part(0), dtype))
    model.add(LazyTensor(name + ".scale", (source.shape[0], 1), part(1)))


def _tied_head(model: Model, n, table: str, keep_fp32: bool) -> list:
    """The MatMul of an LM head tied to an int8 embedding table, which the file holds once.

      x ─ DynamicQuantizeMatMul(Transpose(table int8) [H,V], row scales [V]) ─►   (the Transpose is folded at load)
      kept FP32:  x ─ MatMul(Transpose(table int8) · row scalesᵀ) ─►
    """
    w = n.input[1] + ".int8"
    rows = model.shape(table)[0]
    scale = model.weights[table + ".scale"]
    if keep_fp32:
        cast = helper.make_node("Cast", [w], [w + "/float"], name=n.name + "/dequantize/Cast", to=1)
        model.add(scale.derived(lambda s: s.reshape(1, -1), name=table + ".scale_row", shape=(1, rows)))
        deq = helper.make_node("Mul", [w + "/float", table + ".scale_row"], [w + "/dequantized"],
                               name=n.name + "/dequantize/Mul")
        return [cast, deq, helper.make_node("MatMul", [n.input[0], w + "/dequantized"], list(n.output), name=n.name)]
    model.add(scale.derived(lambda s: s.reshape(-1), name=table + ".scale_column", shape=(rows,)))
    model.add(np.zeros(rows, np.int8), table + ".zero_point")
    return [helper.make_node("DynamicQuantizeMatMul", [n.input[0], w, table + ".scale_column", table + ".zero_point"],
                             list(n.output), name=n.name, domain="com.microsoft")]
