"""`convert`: download → export → fuse → quantize → validate, into one store entry, atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app import __version__
from app.core import cpu
from app.core.errors import DamagedEntryError, InputError, InvalidModelError, PocketError, StoreError
from app.core.export import MANIFEST
from app.core.hub import ModelRef, ModelSource, resolve
from app.core.progress import ProgressFn, check_cancel, report
from app.core.quantize import GuardTarget, QuantizeConfig
from app.core.store.entries import LAYOUT, StoreEntry, load_entry, store_root, verify_entry, write_failure
from app.core.store.identity import Hashes, content_id, entry_dirname
from app.core.store.leftovers import Lock, clean_leftovers

log = logging.getLogger(__name__)

FUSED_OPS = ("MultiHeadAttention", "LayerNormalization", "BiasGelu", "FastGelu")


@dataclass(frozen=True)
class ConvertConfig:
    target: GuardTarget = GuardTarget()
    force: QuantizeConfig | None = None  # experts: use exactly these settings
    calibration_file: Path | None = None  # the user's texts instead of the built-in set
    threads: int | None = None
    reuse: bool = True  # reuse a valid entry converted with the same settings

    def request(self) -> dict:
        """What a stored entry must have been built with to be reused (JSON-normalised, as the manifest holds it);
        the calibration file counts by its content, not its name, and the guard's choice holds for CPUs whose INT8
        products saturate (x86 without VNNI) or for the others, not both."""
        calibration = None
        if self.calibration_file:
            try:
                calibration = {"path": str(self.calibration_file),
                               "sha256": hashlib.sha256(Path(self.calibration_file).read_bytes()).hexdigest()}
            except OSError:
                calibration = {"path": str(self.calibration_file), "sha256": None}  # build_calibration reports it
        return json.loads(json.dumps({"target": asdict(self.target),
                                      "force": asdict(self.force) if self.force else None,
                                      "calibration_file": calibration, "tool_version": __version__,
                                      "u8s8_saturates": cpu.u8s8_saturates()}))



def _checksums(folder: Path, hashes: Hashes) -> dict[str, dict]:
    """{relative path: {bytes, sha256}} of every file of a finished entry folder (except the manifest)."""
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": hashes.sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _stage_fp32(source: ModelSource, out: Path, progress: ProgressFn | None, cancel) -> tuple[dict, dict, object]:
    """The FP32 folder of the entry: exported from the weights, or copied from an `export` folder.
    Returns (manifest of the export, op counts, spec)."""
    from collections import Counter

    import onnx

    from app.core.export import ExportConfig, export_model, source_manifest
    from app.core.spec import load_spec

    if source.onnx_file is None:
        exported = export_model(source, out, ExportConfig(fused=True), progress=progress, cancel=cancel)
        return dict(exported.manifest), exported.op_counts, exported.spec
    report(progress, "export", 0, None, f"using the graph exported in {source.path}")
    spec = load_spec(source.path)
    out.mkdir(parents=True)
    for item in source.path.iterdir():
        if item.name != MANIFEST and not item.name.startswith("."):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, out / item.name)
    try:
        graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise InvalidModelError(f"{source.onnx_file} is not a readable ONNX model ({e}). Export it again.") from e
    try:
        previous = json.loads((source.path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    manifest = source_manifest(source, spec, {})
    manifest["export"] = previous.get("export") if isinstance(previous, dict) else None
    if isinstance(previous, dict) and isinstance(previous.get("head"), dict):
        manifest["head"] = previous["head"]
    report(progress, "export", 1, 1, "copied")
    return manifest, dict(Counter(n.op_type for n in graph.graph.node)), spec


def convert(ref: str | ModelRef, config: ConvertConfig = ConvertConfig(), *, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None, token: str | None = None, root: Path | None = None) -> StoreEntry:
    """Download → export (fused FP32) → quantize with the accuracy guard → validate; returns the store entry."""
    from app.core.calibration import build_calibration
    from app.core.export import copy_runtime_files, write_json_atomic
    from app.core.onnxfile import file_bytes
    from app.core.quantize import quantize_model
    from app.core.tasks.tokenizer import load_tokenizer

    started = time.time()
    if config.calibration_file is not None and not Path(config.calibration_file).is_file():
        raise InputError(f"{config.calibration_file}: no such calibration file. Check the path given to --calibration "
                         "(a .txt with one text per line, TSV, CSV, JSONL or SQuAD JSON).")
    source = resolve(ref, progress=progress, cancel=cancel, token=token)
    root = Path(root or store_root())
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"Cannot create the model store {root} ({e.strerror}). Choose another store location "
                         "in Settings or set POCKET_NLP_HOME.") from e
    clean_leftovers(root)
    load_tokenizer(source.path)  # a missing or broken tokenizer fails now, naming the model's own folder
    hashes = Hashes(root)
    report(progress, "identify", 0, None, "identifying the model by its content")
    content, files = content_id(source, hashes)
    hashes.save()
    name = entry_dirname(source, content)
    final = root / name
    request = config.request()
    if config.reuse and final.is_dir():
        existing = load_entry(final)
        if not existing.damaged and existing.manifest.get("request") == request:
            try:
                verify_entry(existing, hashes)
                report(progress, "validate", 1, 1, f"already converted: {final}")
                return existing
            except DamagedEntryError as e:
                log.warning("%s; converting again", e)

    try:
        with Lock(root / f".{name}.lock"):
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=root))
            try:
                timings = {}
                t = time.perf_counter()
                manifest, op_counts, spec = _stage_fp32(source, tmp / "fp32", progress, cancel)
                timings["export_s"] = round(time.perf_counter() - t, 2)
                report(progress, "optimize", 1, 1, "fused attention, layer norms and GELU emitted by the exporter")
                fusions = {op: op_counts[op] for op in FUSED_OPS if op_counts.get(op)}
                check_cancel(cancel)
                t = time.perf_counter()
                calibration = build_calibration(tmp / "fp32", spec, file=config.calibration_file)
                (tmp / "int8").mkdir()
                result = quantize_model(tmp / "fp32" / "model.onnx", tmp / "int8" / "model.onnx", calibration,
                                        spec=spec, target=config.target,
                                        force=config.force, threads=config.threads, progress=progress, cancel=cancel)
                timings["quantize_s"] = round(time.perf_counter() - t, 2)
                if result.chosen is None:
                    shutil.rmtree(tmp / "int8")
                else:
                    copy_runtime_files(source.path, tmp / "int8")
                manifest["source"]["requested_revision"] = source.ref.revision
                manifest.update({
                    "layout": LAYOUT, "created": started, "request": request, "timings": timings,
                    "identity": {"content": content, "files": files,
                                 "settings": hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()},
                    "optimize": {"fusions": fusions},
                    "quantization": result.to_dict(),
                    "files": {"fp32_bytes": file_bytes(tmp / "fp32" / "model.onnx"),
                              "int8_bytes": result.onnx_bytes},
                    "checksums": _checksums(tmp, hashes),
                })
                manifest["timings"]["total_s"] = round(time.time() - started, 2)
                write_json_atomic(tmp / MANIFEST, manifest)
                check_cancel(cancel)
                if final.exists():  # an older entry with other settings, or a damaged one: swap it out atomically
                    old = root / f".{name}.old-{os.getpid()}"
                    os.replace(final, old)
                    os.replace(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except PocketError:
        raise
    except OSError as e:
        raise StoreError(write_failure(root, e)) from e
    finally:
        hashes.save()
    report(progress, "validate", 1, 1, "done")
    return verify_entry(load_entry(final), hashes)

