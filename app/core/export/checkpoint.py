"""Read safetensors checkpoints without torch: validate every header first, then load one tensor at a time.

Tensors are memory-mapped and converted to float32 one by one (FP16 and BF16 too), so exporting needs
about one copy of the weights in memory at the peak, not two or three.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.errors import InvalidModelError

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int


def _read_header(path: Path) -> dict[str, TensorInfo]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InvalidModelError(f"{path} is truncated (shorter than a safetensors header). Re-download it.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(_MAX_HEADER, size - 8):
            raise InvalidModelError(f"{path} is not a valid safetensors file (header length {header_len} for a "
                                    f"{size}-byte file). The file is corrupt or truncated; re-download it.")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidModelError(f"{path} has a corrupt safetensors header ({e}). Re-download it.") from e
    if not isinstance(header, dict):
        raise InvalidModelError(f"{path} has a corrupt safetensors header. Re-download it.")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    tensors: dict[str, TensorInfo] = {}
    problems: list[str] = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            problems.append(f"{name}: malformed entry")
            continue
        if dtype not in _DTYPES:
            problems.append(f"{name}: unsupported dtype {dtype}")
            continue
        itemsize = 2 if dtype == "BF16" else np.dtype(_DTYPES[dtype]).itemsize
        expected = int(np.prod(shape, dtype=np.int64)) * itemsize
        if end - begin != expected or begin < 0:
            problems.append(f"{name}: {end - begin} bytes for shape {list(shape)} {dtype}")
        elif data_start + end > size:
            problems.append(f"{name}: data ends at byte {data_start + end} but the file has {size}")
        else:
            tensors[name] = TensorInfo(path, dtype, shape, data_start + begin, expected)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InvalidModelError(f"{path} is corrupt or truncated ({shown}). Re-download the model.")
    return tensors


class Checkpoint:
    """All tensors of one model across its safetensors shards, by name."""

    def __init__(self, files: tuple[Path, ...] | list[Path]):
        self.files = tuple(Path(f) for f in files)
        self.tensors: dict[str, TensorInfo] = {}
        for path in self.files:
            self.tensors.update(_read_header(path))

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def load(self, name: str) -> np.ndarray:
        """One tensor as a float32 array (FP16/BF16/F64 converted)."""
        info = self.tensors[name]
        raw = np.fromfile(info.file, dtype=_DTYPES[info.dtype], count=info.nbytes // (2 if info.dtype == "BF16"
                          else np.dtype(_DTYPES[info.dtype]).itemsize), offset=info.offset)
        if info.dtype == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32, copy=False).reshape(info.shape)
