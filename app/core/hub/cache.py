"""The Hugging Face cache and the settings huggingface_hub reads: offline mode, cache folder, endpoint.

Settings are read when called (huggingface_hub reads them once at import; tests and the GUI change them later).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InvalidModelError, PocketError
from app.core.hub.files import weight_files
from app.core.hub.refs import ModelRef, ModelSource

log = logging.getLogger(__name__)

COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHORT_COMMIT = re.compile(r"^[0-9a-f]{7,39}$")


@dataclass(frozen=True)
class CachedModel:
    """A model in the HF cache that we can convert (config.json + safetensors in its snapshot)."""
    repo_id: str
    revision: str  # commit sha
    path: Path  # snapshot folder
    size: int  # bytes on disk of this snapshot's files
    refs: tuple[str, ...] = ()  # branches/tags pointing at it, e.g. ("main",)

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for the cache only."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, as huggingface_hub computes it from the environment."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> tuple[Path, str] | None:
    """The complete snapshot of repo_id@revision in the cache, as (folder, commit sha), or None."""
    repo = repo_folder(cache, repo_id)
    rev = revision or "main"
    sha = None
    if COMMIT.match(rev):
        sha = rev
    elif (repo / "refs" / rev).is_file():
        sha = (repo / "refs" / rev).read_text(encoding="utf-8").strip()
    elif _SHORT_COMMIT.match(rev) and (repo / "snapshots").is_dir():
        matches = [p.name for p in (repo / "snapshots").iterdir() if p.name.startswith(rev)]
        sha = matches[0] if len(matches) == 1 else None
    if not sha:
        return None
    snapshot = repo / "snapshots" / sha
    if not (snapshot / "config.json").is_file():
        return None
    try:
        weight_files(snapshot)
    except InvalidModelError:
        return None  # an interrupted download: weights or shards missing
    return snapshot, sha


def cached_source(ref: ModelRef, cache: Path, notice: str) -> ModelSource | None:
    found = cached_snapshot(str(ref.repo_id), ref.revision, cache)
    if found is None:
        return None
    snapshot, sha = found
    notice = notice.format(repo=ref.repo_id, short=sha[:7])
    log.info("%s", notice)
    return ModelSource(path=snapshot, ref=ref, weight_files=weight_files(snapshot), revision=sha, notice=notice)


def cached_models(cache_dir: Path | None = None) -> list[CachedModel]:
    """Models in the HF cache that we can convert (config.json + safetensors), sorted by repo id."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return []
    for warning in info.warnings:
        log.debug("skipping a corrupted cache entry: %s", warning)
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            snapshot = Path(rev.snapshot_path)
            if not (snapshot / "config.json").is_file():
                continue
            try:
                weight_files(snapshot)
            except PocketError:
                continue  # pickle-only, TF-only or an interrupted download
            found.append(CachedModel(repo_id=repo.repo_id, revision=rev.commit_hash, path=snapshot,
                                     size=rev.size_on_disk, refs=tuple(sorted(rev.refs))))
    return sorted(found, key=lambda m: (m.repo_id.lower(), m.refs == (), m.revision))


def write_ref(repo: Path, revision: str, sha: str) -> None:
    """Point refs/<revision> at sha (what huggingface_hub does), atomically, only after a complete download."""
    if sha.startswith(revision):
        return  # a commit (or its prefix) is not a ref
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + f".{os.getpid()}.tmp")
    tmp.write_text(sha, encoding="utf-8")
    os.replace(tmp, ref)


