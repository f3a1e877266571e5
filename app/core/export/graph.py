"""A small ONNX graph builder whose weights stay on disk until the moment they are written.

Nodes are built with onnx.helper; weights are registered as *lazy* initializers (a shape and a function
that loads them), which `save()` streams into the file one tensor at a time (app/core/onnxfile.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.core.onnxfile import LazyTensor, write_model
from app.core.progress import ProgressFn


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
        return write_model(model, self.weights, path, progress=progress, check_cancel=check_cancel)
