"""Store entries: where the store is, what an entry holds, how it is validated, found, listed and deleted."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from app.core import cpu
from app.core.errors import DamagedEntryError, PocketError, StoreError
from app.core.export import MANIFEST
from app.core.hub import ModelRef
from app.core.store.identity import Hashes, content_id
from app.core.store.leftovers import clean_leftovers

LAYOUT = 2  # manifest layout; entries of older layouts are listed as damaged ("convert again")


def store_root() -> Path:
    """`$POCKET_NLP_HOME`, else `models/` of a source checkout, else the user data directory."""
    if os.environ.get("POCKET_NLP_HOME"):
        return Path(os.environ["POCKET_NLP_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parents[3]
    if not getattr(sys, "frozen", False) and (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        return checkout / "models"
    from platformdirs import user_data_dir

    return Path(user_data_dir("PocketNLP", appauthor=False)) / "models"



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
            and name.startswith(("fp32/", "int8/")) and ".." not in name.split("/")  # inside the entry only
            for name, c in m["checksums"].items()), "checksums"),
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
    """Why a sound entry no longer matches its source or this CPU ("" when it does, or the source cannot be
    looked at)."""
    from app.core.hub import local_source
    from app.core.hub.cache import cached_snapshot, hub_cache_dir

    measured_on = entry.manifest.get("request", {}).get("u8s8_saturates")
    if entry.int8_dir is not None and measured_on not in (None, cpu.u8s8_saturates()):
        return (f"its INT8 was checked on a CPU whose INT8 path is "
                f"{entry.manifest.get('quantization', {}).get('int8_path') or 'another'}; this one's is "
                f"{cpu.int8_path()}, where its answers can differ")
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


def write_failure(root: Path, e: OSError) -> str:
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"The disk is full: writing to the model store {root} failed ({e.strerror}). Free some disk space or "
                "choose another store location in Settings (or POCKET_NLP_HOME); nothing was kept.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"No permission to write to the model store {root} ({e.strerror}). Make it writable or choose another "
                "store location in Settings (or POCKET_NLP_HOME); nothing was kept.")
    return (f"Writing to the model store {root} failed ({e.strerror or e}). Check the disk and try again; nothing "
            "was kept.")

