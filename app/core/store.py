"""The local model store, and `convert`: download → export → fuse → quantize → validate, into one entry.

Entries live in `models/` when run from a checkout, in the user data directory when installed, or in
`$POCKET_NLP_HOME`. An entry is identified by its **content**: the sha256 of every file that changes answers
(weights or an exported graph, config.json, tokenizer and pooling files) — a folder typed on the command line is
resolved to its content every time, so another folder of the same name, retrained weights or edited labels are
never answered by an old conversion. The settings a conversion ran with (`request`) are part of the identity too:
a convert with other settings rebuilds the entry. Folder names hold no `@` (Optimum and transformers read such a
path as a Hub id with a revision), so `fp32/` and `int8/` load in other tools as they are:

  <org>_<name>_<content12>/                     manifest.json  (source, spec, identity, checksums, guard, timings)
                           fp32/model.onnx + config + tokenizer      int8/model.onnx + config + tokenizer

Every entry is validated when it is read (manifest schema, every file present with the size written; sha256 on
load): a damaged entry is listed as damaged with its fix, skipped by lookups of other models and replaced by a
plain `convert`. An entry is built in a hidden `.<name>.partial-<pid>-*` folder and renamed into place when
complete; a lock file stops two conversions of one model at once. Leftovers of killed conversions (partials,
swapped-out folders, stale locks of dead processes) are removed at the next store access.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from app.core.errors import DamagedEntryError, InputError, InvalidModelError, PocketError, StoreError
from app.core.export import MANIFEST
from app.core.hub import POOLING_FILES, TOKENIZER_FILES, ModelRef, ModelSource, resolve
from app.core.progress import ProgressFn, check_cancel, report
from app.core.quantize import GuardTarget, QuantizeConfig

log = logging.getLogger(__name__)

FUSED_OPS = ("MultiHeadAttention", "LayerNormalization", "BiasGelu", "FastGelu")
LAYOUT = 2  # manifest layout; entries of older layouts are listed as damaged ("convert again")
_LEFTOVER = re.compile(r"^\..+\.(?:partial|old|deleted)-(\d+)(?:-.*)?$")
_LOCK = re.compile(r"^\..+\.lock$")
_HASHES = ".hashes.json"


def store_root() -> Path:
    """`$POCKET_NLP_HOME`, else `models/` of a source checkout, else the user data directory."""
    if os.environ.get("POCKET_NLP_HOME"):
        return Path(os.environ["POCKET_NLP_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if not getattr(sys, "frozen", False) and (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    from platformdirs import user_data_dir

    return Path(user_data_dir("PocketNLP", appauthor=False)) / "models"


# --- content identity -------------------------------------------------------------------------------------------

class Hashes:
    """sha256 of files, remembered in the store's `.hashes.json` by (real path, size, mtime, inode), as git's
    index does: a file is read again only when it changed, so resolving a folder to its content costs a stat."""

    def __init__(self, root: Path):
        self.path = Path(root) / _HASHES
        try:
            self.known = json.loads(self.path.read_text(encoding="utf-8"))
            assert isinstance(self.known, dict)
        except (OSError, ValueError, AssertionError):
            self.known = {}
        self.changed = False

    def sha256(self, file: Path) -> str:
        real = Path(file).resolve()  # HF cache snapshots are symlinks into blobs/
        st = real.stat()
        key, stamp = str(real), [st.st_size, st.st_mtime_ns, st.st_ino]
        hit = self.known.get(key)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp and isinstance(hit[3], str):
            return hit[3]
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        self.known[key] = [*stamp, h.hexdigest()]
        self.changed = True
        return h.hexdigest()

    def save(self) -> None:
        if not self.changed:
            return
        if len(self.known) > 4000:  # a cache, not a record: keep the newest
            self.known = dict(list(self.known.items())[-2000:])
        try:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.known), encoding="utf-8")
            os.replace(tmp, self.path)
            self.changed = False
        except OSError as e:  # a read-only store still works, only slower
            log.info("cannot save %s: %s", self.path, e)


def source_files(source: ModelSource) -> list[str]:
    """The files of a source that change answers, relative to its folder: weights (or the exported graph),
    config.json, tokenizer and pooling files."""
    folder = source.path
    model = [source.onnx_file] if source.onnx_file else list(source.weight_files)
    if source.onnx_file and (folder / "model.onnx.data").is_file():
        model.append(folder / "model.onnx.data")
    names = [p.relative_to(folder).as_posix() for p in model]
    names += [n for n in ("config.json", *TOKENIZER_FILES, *POOLING_FILES) if (folder / n).is_file()]
    names += sorted(p.relative_to(folder).as_posix() for p in folder.glob("*_Pooling/config.json"))
    return names


def content_id(source: ModelSource, hashes: Hashes) -> tuple[str, dict[str, str]]:
    """(digest of the source's content, {file: sha256}): the identity of what a conversion reads."""
    files = {name: hashes.sha256(source.path / name) for name in source_files(source)}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest(), files


def entry_dirname(source: ModelSource, content: str) -> str:
    """`org_name_<content12>` or `local_<folder>_<content12>`: no '@', no '--', nothing a Hub id could be."""
    base = source.ref.repo_id.replace("/", "_") if source.ref.repo_id else f"local_{source.path.name}"
    base = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]", "_", base)).strip("._-") or "model"
    return f"{base[:80]}_{content[:12]}"


@dataclass(frozen=True)
class ConvertConfig:
    target: GuardTarget = GuardTarget()
    force: QuantizeConfig | None = None  # experts: use exactly these settings
    calibration_file: Path | None = None  # the user's texts instead of the built-in set
    threads: int | None = None
    reuse: bool = True  # reuse a valid entry converted with the same settings

    def request(self) -> dict:
        """What a stored entry must have been built with to be reused (JSON-normalised, as the manifest holds it);
        the calibration file counts by its content, not its name."""
        calibration = None
        if self.calibration_file:
            try:
                calibration = {"path": str(self.calibration_file),
                               "sha256": hashlib.sha256(Path(self.calibration_file).read_bytes()).hexdigest()}
            except OSError:
                calibration = {"path": str(self.calibration_file), "sha256": None}  # build_calibration reports it
        return json.loads(json.dumps({"target": asdict(self.target),
                                      "force": asdict(self.force) if self.force else None,
                                      "calibration_file": calibration, "tool_version": __version__}))


# --- entries ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreEntry:
    path: Path
    manifest: dict = field(compare=False, repr=False)
    problem: str = field(default="", compare=False)  # why the entry is damaged; "" when it is sound
    stale: str = field(default="", compare=False)  # why a newer conversion is due (its source changed); "" if not

    @property
    def damaged(self) -> bool:
        return bool(self.problem)

    @property
    def source(self) -> dict:
        source = self.manifest.get("source") if isinstance(self.manifest, dict) else None
        return source if isinstance(source, dict) else {}

    @property
    def name(self) -> str:
        repo_id, path = self.source.get("repo_id"), self.source.get("path")
        if isinstance(repo_id, str) and repo_id:
            return repo_id
        return Path(path).name if isinstance(path, str) and path else self.path.name

    @property
    def revision(self) -> str | None:
        return self.source.get("revision")

    @property
    def task(self) -> str:
        spec = self.manifest.get("spec") if isinstance(self.manifest, dict) else None
        return str(spec.get("task", "")) if isinstance(spec, dict) else ""

    @property
    def content(self) -> str:
        identity = self.manifest.get("identity") if isinstance(self.manifest, dict) else None
        return str(identity.get("content", "")) if isinstance(identity, dict) else ""

    @property
    def fp32_dir(self) -> Path:
        return self.path / "fp32"

    @property
    def int8_dir(self) -> Path | None:
        """None when the accuracy guard kept the model in FP32."""
        return self.path / "int8" if (self.path / "int8" / "model.onnx").is_file() else None

    def model_bytes(self, precision: str) -> int:
        """Bytes of the fp32 or int8 ONNX model (with its external data), from the checksums written with it:
        no walk over the disk."""
        return sum(c.get("bytes", 0) for name, c in (self.manifest.get("checksums") or {}).items()
                   if name.startswith(precision + "/") and ".onnx" in name and isinstance(c, dict))

    def fix(self) -> str:
        """What to do about a damaged entry, as a command line."""
        ref = self.source.get("ref")
        again = f"`python -m app convert {ref}` converts it again" if isinstance(ref, str) and ref else "convert the model it came from again"
        return f"{again}, or `python -m app delete {self.path.name}` removes it"

    def summary(self) -> str:
        if self.damaged:
            return f"{self.name}: damaged ({self.problem}); {self.fix()}."
        files = self.manifest.get("files", {})
        q = self.manifest.get("quantization", {})
        if not self.int8_dir:
            return f"{self.name}: kept in FP32. {q.get('explanation', '')}".strip()
        ratio = files.get("fp32_bytes", 0) / max(files.get("int8_bytes", 1), 1)
        agreement = (q.get("chosen") or {}).get("agreement", {}).get("agreement")
        same = f", the same answer as FP32 on {agreement:.1%} of the calibration examples" if agreement is not None else ""
        return f"{self.name}: INT8 is {ratio:.1f}x smaller ({files.get('int8_bytes', 0) / 1e6:.0f} MB){same}."


def _schema_problem(m) -> str:
    """What is wrong with a manifest's shape, in words; "" when it has everything the app reads."""
    from app.core.tasks import TASKS

    if not isinstance(m, dict):
        return "manifest.json does not hold a JSON object"
    if m.get("layout") != LAYOUT:
        return "it was converted by an older version of Pocket NLP"
    source, spec, q = m.get("source"), m.get("spec"), m.get("quantization")
    checks = [
        (isinstance(source, dict) and isinstance(source.get("ref"), str), "source.ref"),
        (isinstance(spec, dict) and spec.get("task") in TASKS, "spec.task"),
        (isinstance(m.get("identity"), dict) and isinstance(m["identity"].get("content"), str), "identity.content"),
        (isinstance(m.get("request"), dict), "request"),
        (isinstance(q, dict) and isinstance(q.get("passed"), bool) and isinstance(q.get("candidates"), list)
         and isinstance(q.get("explanation", ""), str), "quantization"),
        (isinstance(m.get("files"), dict) and all(isinstance(v, int) for v in m["files"].values()), "files"),
        (isinstance(m.get("optimize"), dict) and isinstance(m["optimize"].get("fusions"), dict), "optimize"),
        (isinstance(m.get("checksums"), dict) and all(
            isinstance(c, dict) and isinstance(c.get("bytes"), int) and isinstance(c.get("sha256"), str)
            for c in m["checksums"].values()), "checksums"),
    ]
    bad = [what for ok, what in checks if not ok]
    if bad:
        return f"manifest.json lacks or garbles {', '.join(bad)}"
    needed = ["fp32/model.onnx"] + (["int8/model.onnx"] if q["passed"] else [])
    missing = [n for n in needed if n not in m["checksums"]]
    return f"manifest.json records no {', '.join(missing)}" if missing else ""


def load_entry(path: Path) -> StoreEntry:
    """The entry in `path`, validated cheaply: its manifest's shape and every file's presence and size."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return StoreEntry(path, {}, "it has no manifest.json")
    except (OSError, ValueError) as e:
        return StoreEntry(path, {}, f"manifest.json cannot be read ({type(e).__name__})")
    problem = _schema_problem(manifest)
    if problem:
        return StoreEntry(path, manifest if isinstance(manifest, dict) else {}, problem)
    for name, record in manifest["checksums"].items():
        file = path / name
        try:
            size = file.stat().st_size
        except OSError:
            return StoreEntry(path, manifest, f"{name} is missing")
        if size != record["bytes"]:
            return StoreEntry(path, manifest, f"{name} has {size:,} bytes where {record['bytes']:,} were written "
                                              "(truncated or changed)")
    return StoreEntry(path, manifest)


def verify_entry(entry: StoreEntry, hashes: Hashes | None = None) -> StoreEntry:
    """Check every file's sha256 against the manifest (cheap when unchanged since the last check); raises
    DamagedEntryError with the fix. Call it before loading an entry's models."""
    if entry.damaged:
        raise DamagedEntryError(f"The converted model {entry.path.name} is damaged: {entry.problem}. {entry.fix()}.",
                                path=entry.path)
    hashes = hashes or Hashes(entry.path.parent)
    try:
        for name, record in entry.manifest["checksums"].items():
            if hashes.sha256(entry.path / name) != record["sha256"]:
                raise DamagedEntryError(f"The converted model {entry.path.name} is damaged: {name} changed since it "
                                        f"was written. {entry.fix()}.", path=entry.path)
    except OSError as e:
        raise DamagedEntryError(f"The converted model {entry.path.name} cannot be read ({e.strerror or e}). "
                                f"{entry.fix()}.", path=entry.path) from e
    finally:
        hashes.save()
    return entry


def _staleness(entry: StoreEntry, hashes: Hashes) -> str:
    """Why a sound entry no longer matches its source ("" when it does, or the source cannot be looked at)."""
    from app.core.hub import local_source
    from app.core.hub.cache import cached_snapshot, hub_cache_dir

    source = entry.source
    try:
        if source.get("repo_id"):
            requested = source.get("requested_revision")
            found = cached_snapshot(source["repo_id"], requested, hub_cache_dir())
            if found and entry.revision and found[1] != entry.revision:
                return f"your Hugging Face cache has a newer revision ({found[1][:7]}) of {source['repo_id']}"
            return ""
        folder = Path(source.get("path", ""))
        if not folder.is_dir():
            return ""
        content, _ = content_id(local_source(ModelRef.parse(str(folder))), hashes)
        return "" if content == entry.content else f"the files in {folder} changed since it was converted"
    except (PocketError, OSError):
        return ""


def list_entries(root: Path | None = None, *, staleness: bool = True) -> list[StoreEntry]:
    """Every entry in the store, sound or damaged (`problem` says why), sound ones marked `stale` when their
    source changed since. Leftovers of killed conversions are removed first."""
    root = Path(root or store_root())
    if not root.is_dir():
        return []
    clean_leftovers(root)
    entries = [load_entry(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if staleness:
        hashes = Hashes(root)
        entries = [StoreEntry(e.path, e.manifest, e.problem, "" if e.damaged else _staleness(e, hashes))
                   for e in entries]
        hashes.save()
    return entries


def _newest(entries: list[StoreEntry]) -> StoreEntry | None:
    return max(entries, key=lambda e: e.manifest.get("created", 0)) if entries else None


def find_entry(text: str, root: Path | None = None) -> StoreEntry | None:
    """The sound entry that `text` names, or None when it must be converted first.

    A store entry's folder (or its name) is that entry (DamagedEntryError when damaged). A model folder or an
    `export` folder is resolved to its content every time. A Hub id is the entry of the snapshot your HF cache
    holds for it; without one, the only entry converted from that id and revision (StoreError when several are).
    """
    from app.core.hub import local_source
    from app.core.hub.cache import cached_snapshot, hub_cache_dir

    root = Path(root or store_root())
    path = Path(text).expanduser()
    if path.is_dir() and (path / MANIFEST).is_file() and (path / "fp32").is_dir():
        return verify_entry(load_entry(path))
    if not path.is_dir() and (root / text).is_dir() and not text.startswith("."):
        return verify_entry(load_entry(root / text))
    ref = ModelRef.parse(text)
    sound = [e for e in list_entries(root, staleness=False) if not e.damaged]
    hashes = Hashes(root)
    try:
        if ref.is_local:
            content, _ = content_id(local_source(ref), hashes)
            return _newest([e for e in sound if e.content == content])
        try:
            found = cached_snapshot(str(ref.repo_id), ref.revision, hub_cache_dir())
        except PocketError:
            found = None  # e.g. main is pickle-only and the entry came from the conversion pull request
        if found is not None:
            snapshot, sha = found
            content, _ = content_id(local_source(ModelRef(text=text, path=snapshot), revision=sha), hashes)
            return _newest([e for e in sound if e.content == content])
        same = [e for e in sound if e.source.get("repo_id") == ref.repo_id and (
            ref.revision is None or e.source.get("requested_revision") == ref.revision
            or str(e.revision or "").startswith(ref.revision))]
        if len({e.content for e in same}) > 1:
            names = ", ".join(sorted(e.path.name for e in same))
            raise StoreError(f"{text!r} names several converted models ({names}). Give the folder name of the one "
                             "you mean, or a revision after '@'.")
        return _newest(same)
    finally:
        hashes.save()


def delete_entry(entry: StoreEntry) -> None:
    try:
        trash = entry.path.with_name(f".{entry.path.name}.deleted-{os.getpid()}")
        os.replace(entry.path, trash)  # atomic: the entry disappears at once, then is removed
        shutil.rmtree(trash, ignore_errors=True)
    except OSError as e:
        raise StoreError(f"Cannot delete {entry.path} ({e.strerror}). Check the folder's permissions.") from e


# --- what was measured, kept with the entry -------------------------------------------------------------------

RESULTS = "results.json"  # beside manifest.json; not in the checksums: it grows after the conversion
MAX_EVALUATIONS = 8


def load_results(entry: StoreEntry) -> dict:
    """{"bench": the last benchmark or None, "evaluations": the last evaluation of each data file, newest first};
    each carries `measured_at` and `machine`. An unreadable file reads as nothing measured."""
    try:
        data = json.loads((Path(entry.path) / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    evaluations = [e for e in data.get("evaluations") or [] if isinstance(e, dict)]
    return {"bench": data.get("bench") if isinstance(data.get("bench"), dict) else None, "evaluations": evaluations}


def save_result(entry: StoreEntry, *, bench: dict | None = None, evaluation: dict | None = None) -> dict:
    """Keep a benchmark's or an evaluation's `to_dict()` with the entry (atomically); returns all results."""
    from app.core.export import write_json_atomic

    results = load_results(entry)
    stamp = {"measured_at": time.time(), "machine": machine_summary()}
    if bench is not None:
        results["bench"] = {**bench, **stamp}
    if evaluation is not None:
        others = [e for e in results["evaluations"] if e.get("data") != evaluation.get("data")]
        results["evaluations"] = [{**evaluation, **stamp}, *others][:MAX_EVALUATIONS]
    try:
        write_json_atomic(entry.path / RESULTS, results)
    except OSError as e:
        raise StoreError(_write_failure(entry.path.parent, e)) from e
    return results


def machine_summary() -> str:
    """'Intel Xeon ..., 2 cores' — where a measurement was made."""
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count() or 1} logical cores"


# --- leftovers and locks ----------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    import psutil

    return pid > 0 and psutil.pid_exists(pid)


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def clean_leftovers(root: Path | None = None) -> tuple[int, int]:
    """Remove what killed conversions left (partial and swapped-out folders, temp files, stale locks of dead
    processes); returns (items removed, bytes reclaimed). Work of a living process is never touched."""
    root = Path(root or store_root())
    removed = reclaimed = 0
    try:
        items = list(root.iterdir())
    except OSError:
        return 0, 0
    for item in items:
        name = item.name
        if not name.startswith("."):
            continue
        if _LOCK.match(name):
            try:
                pid = int(item.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
        elif m := (_LEFTOVER.match(name) or re.match(r"^\..+\.(\d+)\.tmp$", name)):
            pid = int(m[1])
        else:
            continue
        if _alive(pid):
            continue
        try:
            size = _tree_bytes(item)
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        except OSError as e:
            log.info("cannot remove the leftover %s: %s", item, e)
            continue
        removed, reclaimed = removed + 1, reclaimed + size
    if removed:
        log.info("removed %d leftovers of interrupted conversions from %s (%.1f MB)", removed, root, reclaimed / 1e6)
    return removed, reclaimed


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


# --- convert ----------------------------------------------------------------------------------------------------

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
        with _Lock(root / f".{name}.lock"):
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
                    "files": {"fp32_bytes": (tmp / "fp32" / "model.onnx").stat().st_size,
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
        raise StoreError(_write_failure(root, e)) from e
    finally:
        hashes.save()
    report(progress, "validate", 1, 1, "done")
    return verify_entry(load_entry(final), hashes)


def _write_failure(root: Path, e: OSError) -> str:
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"The disk is full: writing to the model store {root} failed ({e.strerror}). Free some disk space or "
                "choose another store location in Settings (or POCKET_NLP_HOME); nothing was kept.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"No permission to write to the model store {root} ({e.strerror}). Make it writable or choose another "
                "store location in Settings (or POCKET_NLP_HOME); nothing was kept.")
    return (f"Writing to the model store {root} failed ({e.strerror or e}). Check the disk and try again; nothing "
            "was kept.")


__all__ = ["ConvertConfig", "Hashes", "StoreEntry", "clean_leftovers", "content_id", "convert", "delete_entry",
           "find_entry", "list_entries", "load_entry", "load_results", "machine_summary", "save_result", "store_root",
           "verify_entry"]
