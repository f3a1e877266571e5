"""Hugging Face checkpoint → ONNX, built from the safetensors weights with numpy + onnx (no PyTorch).

`export_model(source, out_dir)` validates config and every tensor first, then writes `model.onnx`, the
config and tokenizer files needed to run it and `manifest.json` into a temporary folder that is moved
into place only when complete: a failure or Cancel leaves no partial output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app import __version__
from app.core.errors import ExportError, PocketError
from app.core.hub import POOLING_FILES, TOKENIZER_FILES, ModelSource
from app.core.progress import ProgressFn, check_cancel, report
from app.core.spec import ModelSpec, load_config, spec_from_config

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 17
    fused: bool = False  # emit fused ops (MultiHeadAttention, LayerNormalization, BiasGelu) instead of their pieces

    def __post_init__(self):
        if not 14 <= self.opset <= 21:
            raise ValueError(f"opset: {self.opset} is outside the supported range 14..21")


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    spec: ModelSpec
    opset: int
    onnx_bytes: int
    seconds: float
    manifest: dict = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)  # op type → nodes in the graph

    @property
    def onnx_path(self) -> Path:
        return self.out_dir / "model.onnx"

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "onnx_path": str(self.onnx_path), "onnx_bytes": self.onnx_bytes,
                "opset": self.opset, "seconds": round(self.seconds, 3), "manifest": self.manifest}


def sha256_files(files) -> dict[str, str]:
    digests = {}
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digests[Path(path).name] = h.hexdigest()
    return digests


def build_graph(source: ModelSource, config: ExportConfig = ExportConfig()):
    """Validate config.json and every tensor; return (spec, graph ready to save, what the head read)."""
    from app.core.export.checkpoint import Checkpoint
    from app.core.tasks import get_task

    spec = spec_from_config(load_config(source.path), where=str(source.path / "config.json"))
    head_config = get_task(spec.task).head_config(source.path)
    ckpt = Checkpoint(source.weight_files)
    builder = spec.family_class(spec, ckpt, opset=config.opset, fused=config.fused, head_config=head_config)
    return spec, builder.build(), head_config


def copy_runtime_files(src: Path, dest: Path) -> None:
    """config.json, the tokenizer files and sentence-transformers' small configs (sentence_bert_config.json holds
    the window embeddings are truncated at): what a runner needs beside model.onnx."""
    for name in ("config.json", *TOKENIZER_FILES, *POOLING_FILES):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    for config in src.glob("*_Pooling/config.json"):
        (dest / config.parent.name).mkdir(exist_ok=True)
        shutil.copy2(config, dest / config.parent.name / "config.json")


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def source_manifest(source: ModelSource, spec: ModelSpec, weights_sha256: dict[str, str]) -> dict:
    return {
        "source": {"ref": source.ref.text, "repo_id": source.ref.repo_id, "revision": source.revision,
                   "path": str(source.path), "weights_sha256": weights_sha256},
        "spec": spec.to_dict(),
        "tool": {"name": "pocket-nlp", "version": __version__},
    }


def export_model(source: ModelSource, out_dir: Path, config: ExportConfig = ExportConfig(), *,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> ExportResult:
    """Export `source` to `out_dir/model.onnx` (+ config, tokenizer, manifest.json), atomically."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    report(progress, "export", 0, None, "reading config and weights")
    spec, graph, head_config = build_graph(source, config)
    check_cancel(cancel)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as e:
        raise ExportError(f"Cannot write to {out_dir.parent} ({e.strerror}). Choose a writable folder.") from e
    try:
        size = graph.save(tmp / "model.onnx", producer_version=__version__, progress=progress,
                          check_cancel=lambda: check_cancel(cancel))
        copy_runtime_files(source.path, tmp)
        report(progress, "export", 0, None, "hashing the weights for the manifest")
        manifest = source_manifest(source, spec, sha256_files(source.weight_files))
        manifest["export"] = {"opset": config.opset, "fused": config.fused, "onnx_bytes": size,
                              "seconds": round(time.perf_counter() - start, 3)}
        if head_config is not None:
            manifest["head"] = head_config.to_dict()
        write_json_atomic(tmp / MANIFEST, manifest)
        check_cancel(cancel)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, out_dir / item.name)
    except PocketError:
        raise
    except (OSError, ValueError) as e:
        raise ExportError(f"Writing {out_dir} failed: {e}. Check free disk space and permissions.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    report(progress, "export", 1, 1, f"wrote {out_dir / 'model.onnx'}")
    return ExportResult(out_dir=out_dir, spec=spec, opset=config.opset, onnx_bytes=size, seconds=seconds,
                        manifest=manifest, op_counts=dict(Counter(n.op_type for n in graph.nodes)))


__all__ = ["ExportConfig", "ExportResult", "build_graph", "copy_runtime_files", "export_model", "sha256_files",
           "write_json_atomic"]
