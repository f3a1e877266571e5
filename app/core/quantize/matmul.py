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
    if config.weight_type == "int8":  # symmetric, zero point 0
        scale = np.maximum(np.abs(w).max(axis=axis), 1e-12) / qmax
        zero = np.zeros_like(scale, dtype=np.int8)
        q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
    else:  # asymmetric uint8
        lo, hi = np.minimum(w.min(axis=axis), 0), np.maximum(w.max(axis=axis), 0)
        scale = np.maximum(hi - lo, 1e-12) / qmax
        zero = np.clip(np.round(-lo / scale), 0, qmax).astype(np.uint8)
        q = np.clip(np.round(w / scale) + zero, 0, qmax).astype(np.uint8)
    return q, np.asarray(scale, np.float32), np.asarray(zero)


def quantize_matmuls(model: Model, config: QuantizeConfig, skip: set[str]) -> None:
    """x·W → DynamicQuantizeMatMul, in place: W int8 per output column (or per tensor), x u8 at run time.

    This is what `onnxruntime.quantization.quantize_dynamic` produces once ONNX Runtime has fused its
    MatMulInteger chain, written directly: no shape inference and no model copies, seconds instead of
    minutes on large models. A following bias Add is folded into the op.
    """
    consumers = model.consumers()
    dtype = np.dtype(np.int8 if config.weight_type == "int8" else np.uint8)
    folded = set()
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
        if config.weight_type == "int8":
            model.add(np.zeros(scale_shape, np.int8), name + "_zero_point")
        else:
            model.add(LazyTensor(name + "_zero_point", scale_shape, part(2), dtype))
        inputs, outputs = [n.input[0], name + "_quantized", name + "_scale", name + "_zero_point"], list(n.output)
        after = consumers.get(n.output[0], [])
        if (len(after) == 1 and after[0].op_type == "Add" and after[0].input[1] in model.weights
                and model.shape(after[0].input[1]) == (columns,)):  # MatMul + Add(bias): one op
            inputs.append(after[0].input[1])
            outputs = list(after[0].output)
            folded.add(id(after[0]))
        n.CopyFrom(helper.make_node("DynamicQuantizeMatMul", inputs, outputs, name=n.name, domain="com.microsoft"))
    model.set_nodes([n for n in model.nodes if id(n) not in folded])
    if not any(o.domain == "com.microsoft" for o in model.proto.opset_import):
        model.proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
