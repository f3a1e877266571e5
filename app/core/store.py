"""The local model store, and `convert`: download → export → fuse → quantize → validate, into one entry.

Entries live in `models/` when run from a checkout, in the user data directory when installed, or in
`$POCKET_NLP_HOME`. One entry per source and revision: `<org>--<name>@<rev>/` holding `fp32/` and `int8/`
(each a model.onnx with the config and tokenizer files it needs) and `manifest.json`. An entry is built in
a hidden temporary folder and renamed into place when complete, so Cancel, a crash or a full disk never
leaves a half-written entry; a lock file stops two conversions of the same model at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app import __version__
from app.core.errors import PocketError, StoreError
from app.core.export import MANIFEST
from app.core.hub import ModelRef, ModelSource, resolve
from app.core.progress import ProgressFn, check_cancel, report
from app.core.quantize import GuardTarget, QuantizeConfig

_LOCK = ".lock"
FUSED_OPS = ("MultiHeadAttention", "LayerNormalization", "BiasGelu", "FastGelu")


def store_root() -> Path:
    """`$POCKET_NLP_HOME`, else `models/` of a source checkout, else the user data directory."""
    if os.environ.get("POCKET_NLP_HOME"):
        return Path(os.environ["POCKET_NLP_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if not getattr(sys, "frozen", False) and (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    from platformdirs import user_data_dir

    return Path(user_data_dir("PocketNLP", appauthor=False)) / "models"


@dataclass(frozen=True)
class ConvertConfig:
    target: GuardTarget = GuardTarget()
    force: QuantizeConfig | None = None  # experts: use exactly these settings
    calibration_file: Path | None = None  # the user's texts instead of the built-in set
    threads: int | None = None
    reuse: bool = True  # reuse a valid entry converted with the same settings

    def request(self) -> dict:
        """What a stored entry must have been built with to be reused (JSON-normalised, as the manifest holds it)."""
        return json.loads(json.dumps({"target": asdict(self.target), "force": asdict(self.force) if self.force else None,
                "calibration_file": str(self.calibration_file) if self.calibration_file else None,
                "tool_version": __version__}))


@dataclass(frozen=True)
class StoreEntry:
    path: Path
    manifest: dict = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.manifest["source"].get("repo_id") or Path(self.manifest["source"]["path"]).name

    @property
    def revision(self) -> str | None:
        return self.manifest["source"].get("revision")

    @property
    def task(self) -> str:
        return self.manifest["spec"]["task"]

    @property
    def fp32_dir(self) -> Path:
        return self.path / "fp32"

    @property
    def int8_dir(self) -> Path | None:
        """None when the accuracy guard kept the model in FP32."""
        return self.path / "int8" if (self.path / "int8" / "model.onnx").is_file() else None

    def summary(self) -> str:
        files = self.manifest.get("files", {})
        q = self.manifest.get("quantization", {})
        if not self.int8_dir:
            return f"{self.name}: kept in FP32. {q.get('explanation', '')}".strip()
        ratio = files.get("fp32_bytes", 0) / max(files.get("int8_bytes", 1), 1)
        agreement = (q.get("chosen") or {}).get("agreement", {}).get("agreement")
        same = f", the same answer as FP32 on {agreement:.1%} of the calibration examples" if agreement is not None else ""
        return f"{self.name}: INT8 is {ratio:.1f}x smaller ({files.get('int8_bytes', 0) / 1e6:.0f} MB){same}."


def entry_dirname(source: ModelSource, weights_digest: str) -> str:
    if source.ref.repo_id:
        name, rev = source.ref.repo_id.replace("/", "--"), (source.revision or "main")[:12]
    else:
        path_hash = hashlib.sha256(str(source.path.resolve()).encode()).hexdigest()[:6]
        name, rev = f"local--{source.path.name}-{path_hash}", weights_digest[:12]
    return re.sub(r"[^\w.\-@]", "_", f"{name}@{rev}")


def _weights_digest(source: ModelSource) -> str:
    """A cheap identity of the weights (names, sizes, mtimes) for naming local entries."""
    h = hashlib.sha256()
    for f in source.weight_files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def load_entry(path: Path) -> StoreEntry | None:
    """The entry in `path` if it is complete and readable, else None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (path / "fp32" / "model.onnx").is_file():
        return None
    if manifest.get("quantization", {}).get("passed") and not (path / "int8" / "model.onnx").is_file():
        return None
    return StoreEntry(path, manifest)


def list_entries(root: Path | None = None) -> list[StoreEntry]:
    root = root or store_root()
    if not root.is_dir():
        return []
    entries = [load_entry(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return [e for e in entries if e is not None]


def find_entry(text: str, root: Path | None = None) -> StoreEntry | None:
    """A stored entry named by its folder, its path, or the model reference it was converted from."""
    root = root or store_root()
    path = Path(text).expanduser()
    if (path / MANIFEST).is_file():
        return load_entry(path)
    if (root / text / MANIFEST).is_file():
        return load_entry(root / text)
    matches = [e for e in list_entries(root) if text in (e.manifest["source"].get("ref"), e.name)]
    return max(matches, key=lambda e: e.manifest.get("created", 0)) if matches else None


def delete_entry(entry: StoreEntry) -> None:
    try:
        trash = entry.path.with_name(f".deleted-{entry.path.name}-{os.getpid()}")
        os.replace(entry.path, trash)  # atomic: the entry disappears at once, then is removed
        shutil.rmtree(trash, ignore_errors=True)
    except OSError as e:
        raise StoreError(f"Cannot delete {entry.path} ({e.strerror}). Check the folder's permissions.") from e


class _Lock:
    """An exclusive lock file next to the entry; stale locks of dead processes are taken over."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    raise StoreError(f"This model is already being converted (process {pid}). Wait for it to "
                                     "finish, or stop it, then try again.") from None
                self.path.unlink(missing_ok=True)
        raise StoreError(f"Cannot lock {self.path}; try again.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def convert(ref: str | ModelRef, config: ConvertConfig = ConvertConfig(), *, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None, token: str | None = None, root: Path | None = None) -> StoreEntry:
    """Download → export (fused FP32) → quantize with the accuracy guard → validate; returns the store entry."""
    from app.core.calibration import build_calibration
    from app.core.export import ExportConfig, copy_runtime_files, export_model, write_json_atomic
    from app.core.quantize import quantize_model

    started = time.time()
    source = resolve(ref, progress=progress, cancel=cancel, token=token)
    root = Path(root or store_root())
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"Cannot create the model store {root} ({e.strerror}). Choose another store location "
                         "in Settings or set POCKET_NLP_HOME.") from e
    name = entry_dirname(source, _weights_digest(source))
    final = root / name
    existing = load_entry(final)
    if config.reuse and existing and existing.manifest.get("request") == config.request():
        report(progress, "validate", 1, 1, f"already converted: {final}")
        return existing

    try:
        lock = _Lock(root / f".{name}{_LOCK}")
        with lock:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
            try:
                timings = {}
                t = time.perf_counter()
                exported = export_model(source, tmp / "fp32", ExportConfig(fused=True), progress=progress,
                                        cancel=cancel)
                timings["export_s"] = round(time.perf_counter() - t, 2)
                report(progress, "optimize", 1, 1, "fused attention, layer norms and GELU emitted by the exporter")
                fusions = {op: exported.op_counts[op] for op in FUSED_OPS if exported.op_counts.get(op)}
                check_cancel(cancel)
                spec = exported.spec
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
                manifest = dict(exported.manifest)
                manifest.update({
                    "created": started, "request": config.request(), "timings": timings,
                    "optimize": {"fusions": fusions},
                    "quantization": result.to_dict(),
                    "files": {"fp32_bytes": (tmp / "fp32" / "model.onnx").stat().st_size,
                              "int8_bytes": result.onnx_bytes},
                })
                manifest["timings"]["total_s"] = round(time.time() - started, 2)
                write_json_atomic(tmp / MANIFEST, manifest)
                check_cancel(cancel)
                if final.exists():  # an older entry with other settings: swap it out atomically
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
        raise StoreError(f"Writing to the model store {root} failed ({e.strerror or e}). Free some disk space or "
                         "choose another store location; nothing was kept.") from e
    report(progress, "validate", 1, 1, "done")
    entry = load_entry(final)
    assert entry is not None
    return entry


__all__ = ["ConvertConfig", "StoreEntry", "convert", "delete_entry", "find_entry", "list_entries", "load_entry",
           "store_root"]
