"""MatMuls with initializer weights → ONNX Runtime's DynamicQuantizeMatMul, written directly."""

from __future__ import annotations

import numpy as np
from onnx import helper

from app.core.onnxfile import LazyTensor
from app.core.quantize.config import QuantizeConfig
from app.core.quantize.model import Model

_LEVELS = {("int8", False): 127, ("int8", True): 63, ("uint8", False): 255, ("uint8", True): 127}


def quantized_weight(w: np.ndarray, config: QuantizeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quantized W, scale, zero point) of a (in, out) weight: one scale per output column, or per tensor."""
    axis = 0 if config.per_channel else None
    qmax = _LEVELS[config.weight_type, config.reduce_range]
    w = w.astype(np.float32, copy=False)
    if not config.zero_points:  # int8 around 0
        scale = np.maximum(np.abs(w).max(axis=axis), 1e-12) / qmax
        zero = np.zeros_like(scale, dtype=np.int8)
        q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
    else:  # [min, max] onto all the levels, a zero point per column: uint8 0..qmax, int8 -(qmax + 1)..qmax
        dtype, bottom = (np.uint8, 0) if config.weight_type == "uint8" else (np.int8, -qmax - 1)
        lo, hi = np.minimum(w.min(axis=axis), 0), np.maximum(w.max(axis=axis), 0)
        scale = np.maximum(hi - lo, 1e-12) / (qmax - bottom)
        zero = np.clip(np.round(bottom - lo / scale), bottom, qmax).astype(dtype)
        q = np.clip(np.round(w / scale) + zero, bottom, qmax).astype(dtype)
    return q, np.asarray(scale, np.float32), np.asarray(zero)


def quantize_matmuls(model: Model, config: QuantizeConfig, skip: set[str]) -> None:
    """x·W → DynamicQuantizeMatMul, in place: W int8 per output column (or per tensor), x u8 at run time; a packed
    Q/K/V projection and the attention it feeds → DynamicQuantizeLinear + QAttention.

    This is what `onnxruntime.quantization.quantize_dynamic` produces once ONNX Runtime has fused its
    MatMulInteger chain, written directly: no shape inference and no model copies, seconds instead of
    minutes on large models. A following bias Add is folded into the op.
    """
    consumers = model.consumers()
    dtype = np.dtype(np.int8 if config.weight_type == "int8" else np.uint8)
    folded, replaced = set(), {}  # nodes folded into an earlier one; node → what takes its place
    for n in model.nodes:
        if n.op_type != "MatMul" or n.name in skip or n.input[1] not in model.weights:
            continue
        name = n.input[1]
        source = model.weights[name]
        columns = source.shape[1]
        scale_shape = (columns,) if config.per_channel else ()

        def part(i: int, name=name, source=source):
            return lambda: model.computed(("matmul", name), lambda: quantized_weight(source.load(), config))[i]

        model.add(LazyTensor(name + "_quantized", source.shape, part(0), dtype))
        model.add(LazyTensor(name + "_scale", scale_shape, part(1)))
        if not config.zero_points:
            model.add(np.zeros(scale_shape, np.int8), name + "_zero_point")
        else:
            model.add(LazyTensor(name + "_zero_point", scale_shape, part(2), dtype))
        weight = [name + "_quantized", name + "_scale", name + "_zero_point"]
        attention = _packed_attention(model, n, consumers)
        if attention is not None:  # x ─ QKV MatMul ─ Split ─ MultiHeadAttention ─►  becomes one QAttention
            split, mha = attention
            folded |= {id(split), id(mha)}
            replaced[id(n)] = _qattention(n, mha, weight)
            continue
        inputs, outputs = [n.input[0], *weight], list(n.output)
        bias = model.bias_add(n, consumers)
        if bias is not None:  # MatMul + Add(bias): one op
            inputs.append(bias.input[1])
            outputs = list(bias.output)
            folded.add(id(bias))
        n.CopyFrom(helper.make_node("DynamicQuantizeMatMul", inputs, outputs, name=n.name, domain="com.microsoft"))
    model.set_nodes([m for n in model.nodes if id(n) not in folded for m in replaced.get(id(n), [n])])
    if not any(o.domain == "com.microsoft" for o in model.proto.opset_import):
        model.proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _packed_attention(model: Model, n, consumers: dict) -> tuple | None:
    """(Split, MultiHeadAttention) when the MatMul `n` is a packed Q/K/V projection that only feeds a plain
    MultiHeadAttention (bias and key padding mask, no past, no extra bias or attributes): ONNX Runtime's QAttention
    does the three in one, its GEMM writing the heads where attention reads them (no Split copy, no transposes)."""
    after = consumers.get(n.output[0], [])
    if len(after) != 1 or after[0].op_type != "Split" or len(after[0].output) != 3:
        return None
    split = after[0]
    users = [consumers.get(o, []) for o in split.output]
    if any(len(u) != 1 for u in users) or len({id(u[0]) for u in users}) != 1:
        return None
    mha = users[0][0]
    if (mha.op_type != "MultiHeadAttention" or list(mha.input[:3]) != list(split.output) or len(mha.input) != 5
            or mha.input[3] not in model.weights or not mha.input[4] or len(mha.output) != 1
            or [a.name for a in mha.attribute] != ["num_heads"]):
        return None
    return split, mha


def _qattention(n, mha, weight: list[str]) -> list:
    """x ─ DynamicQuantizeLinear ─ QAttention(x u8, W, bias, x scale, W scale, mask, x zero point, W zero point) ─►"""
    x = n.input[0]
    q, scale, zero = f"{x}/u8", f"{x}/scale", f"{x}/zero"
    inputs = [q, weight[0], mha.input[3], scale, weight[1], mha.input[4], zero, weight[2]]
    return [helper.make_node("DynamicQuantizeLinear", [x], [q, scale, zero], name=n.name + "/DynamicQuantizeLinear"),
            helper.make_node("QAttention", inputs, list(mha.output), name=n.name, domain="com.microsoft",
                             num_heads=helper.get_attribute_value(mha.attribute[0]))]
