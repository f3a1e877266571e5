"""The model the guard rewrites: its structure in memory, its weights on disk until they are written.

A candidate is the FP32 structure (kilobytes) plus a table of lazy weights: rewrites replace entries with
transformed views (`LazyTensor.derived`) instead of arrays, so trying a setting costs one tensor in memory at a
time while the candidate is written, and copying the model for the next setting copies only that table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from app.core.onnxfile import LazyTensor, eager, read_model, referencing, write_model


class Model:
    def __init__(self, proto: onnx.ModelProto, weights: dict[str, LazyTensor]):
        self.proto = proto  # no initializers: those are in `weights`
        self.weights = weights
        self._last: tuple[object, object] = (None, None)

    @classmethod
    def read(cls, path: Path) -> Model:
        proto, stored = read_model(path)
        weights = {t.name: eager(numpy_helper.to_array(t), t.name) for t in proto.graph.initializer}
        weights.update((t.name, t) for t in stored)
        del proto.graph.initializer[:]
        return cls(proto, weights)

    def copy(self) -> Model:
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        return Model(proto, dict(self.weights))

    @property
    def nodes(self):
        return self.proto.graph.node

    def set_nodes(self, nodes: list) -> None:
        kept = list(nodes)  # the protos may be the graph's own: copy them out before clearing
        del self.proto.graph.node[:]
        self.proto.graph.node.extend(kept)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.weights[name].shape

    def load(self, name: str) -> np.ndarray:
        return self.weights[name].load()

    def add(self, tensor: LazyTensor | np.ndarray, name: str | None = None) -> str:
        tensor = tensor if isinstance(tensor, LazyTensor) else eager(np.asarray(tensor), name)
        self.weights[tensor.name] = tensor
        return tensor.name

    def transform(self, name: str, fn) -> None:
        """Replace a weight by fn(weight), applied when it is loaded."""
        self.weights[name] = self.weights[name].derived(fn)

    def computed(self, key, fn):
        """fn() for `key`, kept until another key is asked for. The parts of one derived weight (int8 values and
        their scales) are written one after another: each is computed once, and one weight at a time is held."""
        if self._last[0] != key:
            self._last = (None, None)
            self._last = (key, fn())
        return self._last[1]

    def weighted_matmuls(self) -> list:
        """MatMul nodes whose weight is an initializer: the ones quantization touches."""
        return [n for n in self.nodes if n.op_type == "MatMul" and n.input[1] in self.weights]

    def bias_add(self, matmul, consumers: dict[str, list]):
        """The Add of a bias (one value per output column) that alone reads a weighted MatMul's output, else None."""
        after = consumers.get(matmul.output[0], [])
        if (len(after) == 1 and after[0].op_type == "Add" and after[0].input[1] in self.weights
                and self.shape(after[0].input[1]) == (self.shape(matmul.input[1])[1],)):
            return after[0]
        return None

    def consumers(self) -> dict[str, list]:
        """Tensor name → the nodes that read it."""
        consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        return consumers

    def producers(self) -> dict[str, object]:
        """Tensor name → the node that writes it."""
        return {o: n for n in self.nodes for o in n.output}

    def probe(self, folder: Path, outputs: list[str]) -> onnx.ModelProto:
        """This (unchanged) model with more outputs, its stored weights referenced where they lie in `folder`
        rather than copied: ONNX Runtime loads it from a small file in that folder."""
        folder = Path(folder).resolve()
        stored = [t for t in self.weights.values() if t.file is not None and folder in t.file.parents]
        model = referencing(self.proto, stored, folder)
        names = {t.name for t in stored}
        model.graph.initializer.extend(numpy_helper.from_array(t.load(), t.name) for t in self.weights.values()
                                       if t.name not in names)
        model.graph.output.extend(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs)
        return model

    def save(self, path: Path, *, data_name: str | None = None, check_cancel=lambda: None) -> int:
        try:
            return write_model(self.proto, list(self.weights.values()), path, data_name=data_name,
                               check_cancel=check_cancel)
        finally:
            self._last = (None, None)
