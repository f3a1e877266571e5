"""A small ONNX graph builder whose weights stay on disk until the moment they are written.

Nodes are built with onnx.helper; weights are registered as *lazy* initializers (a shape and a function
that loads them). `save()` serializes the graph without them, then appends each initializer to the file
in protobuf wire format, one tensor in memory at a time. Protobuf accepts fields in any order, so the
result is an ordinary ONNX file. Models over 2 GB put their weights in `model.onnx.data` (external data).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.core.progress import ProgressFn, report

_PROTOBUF_LIMIT = 2_000_000_000


@dataclass(frozen=True)
class LazyTensor:
    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]  # returns float32 of `shape`


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload_len: int) -> bytes:
    """Key and length prefix of a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(payload_len)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def with_extra_outputs(model_bytes: bytes, outputs: list[onnx.ValueInfoProto]) -> bytes:
    """A serialized model with more graph outputs, spliced into the bytes (no parse and re-serialize).

    Protobuf lets repeated fields continue anywhere in a message, so the outputs (GraphProto field 12) are
    appended to the graph (ModelProto field 7) and the graph's length prefix is rewritten.
    """
    view, pos = memoryview(model_bytes), 0  # slices of a memoryview are not copies: the join copies once
    while pos < len(model_bytes):
        start = pos
        key, pos = _read_varint(model_bytes, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(model_bytes, pos)
        elif wire == 2:
            length, pos = _read_varint(model_bytes, pos)
            if key >> 3 == 7:
                extra = b"".join(_field(12, len(b)) + b for b in (o.SerializeToString() for o in outputs))
                return b"".join((view[:start], _field(7, length + len(extra)), view[pos:pos + length], extra,
                                 view[pos + length:]))
            pos += length
        else:  # ModelProto has only varint and length-delimited fields
            break
    raise ValueError("not an ONNX model (no graph found)")


class Graph:
    def __init__(self, name: str, opset: int, *, contrib: bool = False):
        self.name, self.opset, self.contrib = name, opset, contrib
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.constants: list[TensorProto] = []
        self.weights: list[LazyTensor] = []
        self._const_cache: dict[tuple, str] = {}

    # --- building -------------------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, shape: list) -> None:
        self.node("Identity", [value], f"/outputs/{name}", out=name)
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))

    def node(self, op: str, inputs: list[str], name: str, *, outputs: int = 1, out: str | None = None,
             domain: str = "", **attrs) -> str | list[str]:
        names = [out] if out else [f"{name}_output_{i}" for i in range(outputs)]
        if op == "Split" and len(inputs) == 1 and self.opset >= 18:  # equal parts: opset 18 wants them counted
            attrs.setdefault("num_outputs", outputs)
        self.nodes.append(helper.make_node(op, inputs, names, name=name, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=np.int64) -> str:
        """A small constant initializer (shapes, axes, scalars), shared by value."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._const_cache:
            name = f"const_{len(self._const_cache)}"
            self.constants.append(numpy_helper.from_array(array, name))
            self._const_cache[key] = name
        return self._const_cache[key]

    def weight(self, name: str, shape: tuple[int, ...], load: Callable[[], np.ndarray]) -> str:
        self.weights.append(LazyTensor(name, tuple(shape), load))
        return name

    # --- writing --------------------------------------------------------------------------------
    def model_proto(self) -> onnx.ModelProto:
        """The model without its weights (what gets checked and serialized first)."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.constants)
        opsets = [helper.make_opsetid("", self.opset)]
        if self.contrib:
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="pocket-nlp")
        model.ir_version = min(model.ir_version, 9)  # readable by every onnxruntime of the last two years
        return model

    def save(self, path: Path, *, producer_version: str = "", progress: ProgressFn | None = None,
             check_cancel: Callable[[], None] = lambda: None) -> int:
        """Write the model to `path`, streaming the weights; returns the number of bytes written."""
        model = self.model_proto()
        model.producer_version = producer_version
        graph_bytes = model.graph.SerializeToString()
        model.ClearField("graph")
        head = model.SerializeToString()
        total_weight_bytes = sum(4 * int(np.prod(w.shape)) for w in self.weights)
        external = total_weight_bytes + len(graph_bytes) > _PROTOBUF_LIMIT
        data_path = path.with_name(path.name + ".data")

        tensor_headers = []
        for w in self.weights:
            t = TensorProto(name=w.name, data_type=TensorProto.FLOAT, dims=list(w.shape))
            if external:
                t.data_location = TensorProto.EXTERNAL
            tensor_headers.append(t)
        if external:  # offsets are known up front: tensors are laid out one after another
            offset = 0
            for t, w in zip(tensor_headers, self.weights):
                n = 4 * int(np.prod(w.shape))
                for k, v in (("location", data_path.name), ("offset", str(offset)), ("length", str(n))):
                    t.external_data.add(key=k, value=v)
                offset += n
        entries = []  # (prefix bytes, lazy tensor)
        for t, w in zip(tensor_headers, self.weights):
            header = t.SerializeToString()
            n = 4 * int(np.prod(w.shape))
            raw_field = b"" if external else _field(9, n)
            body_len = len(header) + len(raw_field) + (0 if external else n)
            entries.append((_field(5, body_len) + header + raw_field, w))
        graph_len = len(graph_bytes) + sum(len(p) + (0 if external else 4 * int(np.prod(w.shape)))
                                           for p, w in entries)

        written = 0
        data_file = open(data_path, "wb") if external else None
        try:
            with open(path, "wb") as f:
                f.write(head + _field(7, graph_len) + graph_bytes)
                for i, (prefix, w) in enumerate(entries):
                    check_cancel()
                    array = np.ascontiguousarray(w.load(), dtype=np.float32)
                    if array.shape != w.shape:
                        raise ValueError(f"{w.name}: built shape {array.shape}, expected {w.shape}")
                    f.write(prefix)
                    (data_file or f).write(memoryview(array).cast("B"))
                    written += array.nbytes
                    report(progress, "export", written, total_weight_bytes, f"writing {w.name}", unit="B")
                f.flush()
                os.fsync(f.fileno())
            if data_file:
                data_file.flush()
                os.fsync(data_file.fileno())
        finally:
            if data_file:
                data_file.close()
        return path.stat().st_size + (data_path.stat().st_size if external else 0)
