"""ONNX files read and written one tensor at a time, so that no step ever holds a whole model in memory.

Protobuf lets a message's fields come in any order and a repeated field continue anywhere, so a model file can
be written as its small structure followed by its initializers, each streamed from wherever it comes from, and
read back by walking the wire format: the structure is parsed, each large initializer is only located (file,
offset, length) and loaded when it is asked for. Models over 2 GB (protobuf's limit) keep their weights in
`<name>.data` beside the model (ONNX's external data).
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.core.progress import ProgressFn, report

PROTOBUF_LIMIT = 2_000_000_000
EAGER_BELOW = 1 << 16  # initializers below this many bytes are parsed with the structure


@dataclass(frozen=True)
class LazyTensor:
    """An initializer that is loaded (or computed) only when it is written or used."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    dtype: np.dtype = field(default=np.dtype(np.float32))
    file: Path | None = None  # where its raw little-endian bytes lie unchanged, if they do
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize * math.prod(self.shape)

    def derived(self, fn: Callable[[np.ndarray], np.ndarray], *, name: str | None = None,
                shape: tuple[int, ...] | None = None, dtype=None) -> LazyTensor:
        """This tensor transformed by `fn` when loaded (still nothing in memory until then)."""
        load = self.load
        return LazyTensor(name or self.name, tuple(self.shape if shape is None else shape), lambda: fn(load()),
                          np.dtype(dtype or self.dtype))


def eager(array: np.ndarray, name: str) -> LazyTensor:
    return LazyTensor(name, tuple(array.shape), lambda: array, array.dtype)


# --- protobuf wire format -------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_prefix(number: int, payload_len: int) -> bytes:
    """Key and length prefix of a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(payload_len)


def _read_varint(data, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of the field's key, start of its value, end) for each field in data[start:end]."""
    pos = start
    while pos < end:
        begin = pos
        key, pos = _read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            value = pos
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 2:
            length, value = _read_varint(data, pos)
            pos = value + length
        elif wire == 5:
            value, pos = pos, pos + 4
        else:
            raise ValueError(f"not an ONNX model (protobuf wire type {wire} at byte {begin})")
        if pos > end:
            raise ValueError(f"not an ONNX model (a field at byte {begin} runs past the end: truncated?)")
        yield key >> 3, begin, value, pos


# --- reading --------------------------------------------------------------------------------------------------

def _from_file(name: str, shape: tuple[int, ...], dtype: np.dtype, file: Path, offset: int, length: int) -> LazyTensor:
    if length != dtype.itemsize * math.prod(shape):
        raise ValueError(f"initializer {name}: {length} bytes of data for shape {list(shape)} of {dtype}")
    count = math.prod(shape)
    return LazyTensor(name, shape, lambda: np.fromfile(file, dtype, count=count, offset=offset).reshape(shape),
                      dtype, file, offset)


def _external(header: TensorProto, folder: Path) -> LazyTensor:
    info = {e.key: e.value for e in header.external_data}
    location = info.get("location", "")
    file = (folder / location).resolve()
    if not location or Path(location).is_absolute() or folder.resolve() not in file.parents:
        raise ValueError(f"initializer {header.name}: its external data {location!r} is not a file beside the model")
    dtype = helper.tensor_dtype_to_np_dtype(header.data_type)
    shape = tuple(header.dims)
    offset = int(info.get("offset", 0))
    length = int(info["length"]) if "length" in info else dtype.itemsize * math.prod(shape)
    if not file.is_file() or file.stat().st_size < offset + length:
        raise ValueError(f"initializer {header.name}: {location} is missing or shorter than the model says")
    return _from_file(header.name, shape, dtype, file, offset, length)


def read_model(path: Path) -> tuple[onnx.ModelProto, list[LazyTensor]]:
    """The model's structure (nodes, inputs, outputs, small initializers) and its large initializers, located in
    the file (or in its external data) but not loaded."""
    path = Path(path).resolve()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        top, graph, tensors = [], [], []
        for number, begin, value, end in _fields(data, 0, len(data)):
            if number != 7:  # everything but the graph is small
                top.append(data[begin:end])
                continue
            for g_number, g_begin, g_value, g_end in _fields(data, value, end):
                if g_number != 5 or g_end - g_value < EAGER_BELOW:
                    graph.append(data[g_begin:g_end])
                    continue
                header, raw = [], None
                for t_number, t_begin, t_value, t_end in _fields(data, g_value, g_end):
                    if t_number == 9:
                        raw = (t_value, t_end - t_value)
                    else:
                        header.append(data[t_begin:t_end])
                tensor = TensorProto.FromString(b"".join(header))
                if raw is not None:
                    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
                    tensors.append(_from_file(tensor.name, tuple(tensor.dims), dtype, path, *raw))
                elif tensor.data_location == TensorProto.EXTERNAL:
                    tensors.append(_external(tensor, path.parent))
                else:  # typed fields (float_data...) instead of raw bytes: rare for large tensors; parse it whole
                    array = numpy_helper.to_array(TensorProto.FromString(data[g_value:g_end]))
                    tensors.append(eager(array, tensor.name))
    model = onnx.ModelProto.FromString(b"".join(top))
    model.graph.ParseFromString(b"".join(graph))
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    for t in external:  # small tensors in external data: located like the large ones
        tensors.append(_external(t, path.parent))
    if external:
        kept = [t for t in model.graph.initializer if t.data_location != TensorProto.EXTERNAL]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return model, tensors


def _header(t: LazyTensor, external: tuple[str, int] | None = None) -> TensorProto:
    """`t`'s TensorProto without its data; with `external` (location, offset), pointing at it there."""
    header = TensorProto(name=t.name, data_type=helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), dims=list(t.shape))
    if external:
        header.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external[0]), ("offset", str(external[1])), ("length", str(t.nbytes))):
            header.external_data.add(key=k, value=v)
    return header


def referencing(model: onnx.ModelProto, tensors: list[LazyTensor], folder: Path) -> onnx.ModelProto:
    """A copy of the (weightless) `model` whose initializers are external data pointing where `tensors` lie on
    disk, within `folder`: a small file that ONNX Runtime loads from that folder, for a variant of a stored model
    (more outputs) without a second copy of its weights."""
    folder = Path(folder).resolve()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in tensors:
        if t.file is None:
            raise ValueError(f"initializer {t.name} is not stored in a file")
        out.graph.initializer.append(_header(t, (t.file.relative_to(folder).as_posix(), t.offset)))
    return out


def file_bytes(path: Path) -> int:
    """Bytes of a model file and of its external data beside it (`<name>.data`), if any."""
    data = Path(path).with_name(Path(path).name + ".data")
    return Path(path).stat().st_size + (data.stat().st_size if data.is_file() else 0)


# --- writing --------------------------------------------------------------------------------------------------

def write_model(model: onnx.ModelProto, tensors: list[LazyTensor], path: Path, *, data_name: str | None = None,
                progress: ProgressFn | None = None, stage: str = "export",
                check_cancel: Callable[[], None] = lambda: None) -> int:
    """Write `model` (its own small initializers included) plus `tensors`, loaded one at a time, to `path`, with
    the tensors in `data_name` (default `<name>.data`) when the whole would pass protobuf's 2 GB. Tensors no
    node reads are left out. Returns the bytes written (model file and data file)."""
    path = Path(path)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    tensors = [t for t in tensors if t.name in used]
    graph_bytes = model.graph.SerializeToString()
    head = onnx.ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    head = head.SerializeToString()
    total = sum(t.nbytes for t in tensors)
    external = total + len(graph_bytes) > PROTOBUF_LIMIT
    data_path = path.with_name(data_name or path.name + ".data")

    entries, offset = [], 0  # (the tensor's header as a graph field, the tensor)
    for t in tensors:
        if external:  # offsets are known up front: tensors are laid out one after another
            raw = _header(t, (data_path.name, offset)).SerializeToString()
            offset += t.nbytes
            entries.append((field_prefix(5, len(raw)) + raw, t))
        else:
            raw = _header(t).SerializeToString() + field_prefix(9, t.nbytes)
            entries.append((field_prefix(5, len(raw) + t.nbytes) + raw, t))
    graph_len = len(graph_bytes) + sum(len(p) + (0 if external else t.nbytes) for p, t in entries)

    written = 0
    data_file = open(data_path, "wb") if external else None
    try:
        with open(path, "wb") as f:
            f.write(head + field_prefix(7, graph_len) + graph_bytes)
            for prefix, t in entries:
                check_cancel()
                array = np.asarray(t.load(), dtype=t.dtype)
                if not array.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-D)
                    array = array.copy()
                if array.shape != t.shape:
                    raise ValueError(f"{t.name}: built shape {array.shape}, expected {t.shape}")
                if array.dtype.byteorder == ">":
                    array = array.astype(array.dtype.newbyteorder("<"))
                f.write(prefix)
                (data_file or f).write(memoryview(array).cast("B"))
                written += array.nbytes
                report(progress, stage, written, total, f"writing {t.name}", unit="B")
            f.flush()
            os.fsync(f.fileno())
        if data_file:
            data_file.flush()
            os.fsync(data_file.fileno())
    finally:
        if data_file:
            data_file.close()
    if not external:
        data_path.unlink(missing_ok=True)  # a model that shrank below 2 GB: no stale data file beside it
    return path.stat().st_size + (data_path.stat().st_size if external else 0)
