"""Model references → a local folder with config.json, safetensors weights and tokenizer files.

A reference is `org/name`, `org/name@revision`, a Hub URL (`https://huggingface.co/org/name`,
`.../tree/REV`) or a local folder. Hub models go through huggingface_hub into the standard HF cache
(`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`), fetching only what a conversion needs: config.json,
the safetensors weights (single file or index + shards) and tokenizer files. We never unpickle: repos with only
`pytorch_model.bin` (or only TF/Flax weights) are refused before anything is downloaded.

Offline behaviour: with `HF_HUB_OFFLINE=1` only the cache is used; when the Hub cannot be reached, a cached copy
is used and `ModelSource.notice` says so; with nothing cached, `OfflineError` says what to do. Every
huggingface_hub / httpx failure is translated in `_translate` (one boundary). huggingface_hub is imported inside
functions so `import app.core.hub` stays cheap.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from app.core.errors import (AccessDeniedError, InvalidModelError, ModelNotFoundError, OfflineError, PocketError,
                             StoreError, UnsupportedModelError)
from app.core.progress import ProgressFn, check_cancel, report

log = logging.getLogger(__name__)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")
# Small files sentence-transformers repos use to describe pooling; the embedding task may read them.
POOLING_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_POOLING_CONFIG = re.compile(r"^\d+_Pooling/config\.json$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHORT_COMMIT = re.compile(r"^[0-9a-f]{7,39}$")
_HUB_HOST = r"(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)"
_NAME = r"[\w.\-]+"
_SITE_PAGES = {"models", "docs", "blog", "papers", "collections", "settings", "organizations", "login", "join",
               "pricing", "tasks", "learn", "search", "api"}


def _valid_repo_id(repo_id: str) -> bool:
    """The Hub's own rules: 1 or 2 parts, no '--' or '..', parts not starting/ending with '-' or '.', ≤ 96 chars."""
    parts = repo_id.split("/")
    return (len(repo_id) <= 96 and 1 <= len(parts) <= 2 and "--" not in repo_id and ".." not in repo_id
            and all(p and p[0] not in "-." and p[-1] not in "-." for p in parts))


@dataclass(frozen=True)
class ModelRef:
    text: str  # what the user typed
    repo_id: str | None = None  # Hub models
    revision: str | None = None  # branch, tag or commit sha; None means "main"
    path: Path | None = None  # local folders

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def label(self) -> str:
        """`org/name`, `org/name@rev` or the folder, for messages."""
        if self.path is not None:
            return str(self.path)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        text = str(text).strip()
        if not text:
            raise ModelNotFoundError("No model given. Enter a Hub id like 'org/name', a Hub URL or a folder.")
        path = Path(text).expanduser()
        if path.is_dir():
            return cls(text=text, path=path.resolve())
        if re.match(_HUB_HOST + r"/(?:datasets|spaces)/", text):
            raise ModelNotFoundError(f"{text!r} is a Hub dataset or Space, not a model. Give a model id like "
                                     "'org/name' or a https://huggingface.co/org/name URL.")
        url = re.match(_HUB_HOST + rf"/(?P<repo>{_NAME}(?:/{_NAME})?)"
                       r"(?:/(?:tree|blob|resolve|commit)/(?P<rev>[^/?#]+)(?:/[^?#]*)?)?/?(?:[?#].*)?$", text)
        if url and _valid_repo_id(url["repo"]) and url["repo"] not in _SITE_PAGES:
            rev = unquote(url["rev"]) if url["rev"] else None  # /tree/refs%2Fpr%2F1 → refs/pr/1
            return cls(text=text, repo_id=url["repo"], revision=rev)
        hub = re.match(rf"^(?P<repo>{_NAME}(?:/{_NAME})?)(?:@(?P<rev>[\w.\-/]+))?$", text)
        if hub and _valid_repo_id(hub["repo"]) and not text.startswith((".", "/", "~")) and (
                "/" in hub["repo"] or not path.exists()):
            # One-part ids ("bert-base-uncased") are legacy canonical Hub ids.
            return cls(text=text, repo_id=hub["repo"], revision=hub["rev"])
        if path.exists():
            raise InvalidModelError(f"{path} is a file, not a model folder. Pick the folder that holds config.json.")
        raise ModelNotFoundError(f"{text!r} is neither an existing folder nor a Hub id like 'org/name' "
                                 "or a huggingface.co URL.")


@dataclass(frozen=True)
class ModelSource:
    path: Path  # folder with config.json, *.safetensors and tokenizer files
    ref: ModelRef
    weight_files: tuple[Path, ...]
    revision: str | None = None  # commit sha for Hub models
    notice: str = ""  # something the user should know, e.g. "offline: using the cached copy"

    @property
    def name(self) -> str:
        return self.ref.repo_id or self.path.name


@dataclass(frozen=True)
class CachedModel:
    """A model in the HF cache that we can convert (config.json + safetensors in its snapshot)."""
    repo_id: str
    revision: str  # commit sha
    path: Path  # snapshot folder
    size: int  # bytes on disk of this snapshot's files
    refs: tuple[str, ...] = ()  # branches/tags pointing at it, e.g. ("main",)


def _pickle_only_message(where: str) -> str:
    return (f"{where} has only PyTorch pickle weights (pytorch_model.bin). Pocket NLP never loads pickles, "
            "because unpickling can run arbitrary code. Choose a model that ships model.safetensors "
            "(most do; look for a 'safetensors' revision or a converted copy on the Hub).")


def _other_weights_message(where: str) -> str:
    return (f"{where} has only TensorFlow/Flax weights. Pocket NLP reads safetensors weights; choose a model "
            "that ships model.safetensors.")


def weight_files(folder: Path) -> tuple[Path, ...]:
    """The safetensors files of a model folder, in load order; refuses pickle-only and TF/Flax-only folders."""
    folder = Path(folder)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise InvalidModelError(f"{index} is not a valid safetensors index ({e}). Re-download the model.") from e
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise InvalidModelError(f"{folder} lacks weight shards listed in {SAFETENSORS_INDEX}: "
                                    f"{', '.join(missing)}. Re-download the model.")
        return tuple(folder / s for s in shards)
    if (folder / SAFETENSORS).is_file():
        return (folder / SAFETENSORS,)
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if len(others) == 1:
        return (folder / others[0],)
    if any((folder / name).exists() for name in PICKLE_WEIGHTS):
        raise UnsupportedModelError(_pickle_only_message(str(folder)))
    if any((folder / name).exists() for name in OTHER_WEIGHTS):
        raise UnsupportedModelError(_other_weights_message(str(folder)))
    if not (folder / "config.json").is_file():
        raise InvalidModelError(f"{folder} is not a model folder: it has no config.json and no weights. Pick the "
                                "folder that holds config.json and model.safetensors.")
    raise InvalidModelError(f"{folder} has a config.json but no model.safetensors. Re-download the model.")


def local_source(ref: ModelRef, *, revision: str | None = None, notice: str = "") -> ModelSource:
    assert ref.path is not None
    return ModelSource(path=ref.path, ref=ref, weight_files=weight_files(ref.path), revision=revision, notice=notice)


# ---------------------------------------------------------------------------------------------------------------
# Settings, read when called (huggingface_hub reads them once at import; tests and the GUI change them later)


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


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


# ---------------------------------------------------------------------------------------------------------------
# Which files to fetch


def select_files(names: list[str] | tuple[str, ...], *, where: str = "The repo") -> list[str]:
    """The files of a repo listing a conversion needs: config.json, safetensors weights, tokenizer files.

    For sharded weights the index is listed (its shards are added once it is read, see `_shards`).
    Refuses pickle-only and TF/Flax-only repos with UnsupportedModelError, before anything is downloaded.
    """
    present = set(names)
    if "config.json" not in present:
        raise UnsupportedModelError(f"{where} has no config.json, so it is not a Transformers model Pocket NLP "
                                    "can convert. Choose a model repo that ships config.json and model.safetensors.")
    top_safetensors = sorted(n for n in present if "/" not in n and n.endswith(".safetensors"))
    if SAFETENSORS in present:
        weights = [SAFETENSORS]
    elif SAFETENSORS_INDEX in present:
        weights = [SAFETENSORS_INDEX]
    elif len(top_safetensors) == 1:
        weights = top_safetensors
    elif any(n in present for n in PICKLE_WEIGHTS) or any(re.match(r"^pytorch_model-\d+", n) for n in present):
        raise UnsupportedModelError(_pickle_only_message(where))
    elif any(n in present for n in OTHER_WEIGHTS):
        raise UnsupportedModelError(_other_weights_message(where))
    else:
        raise UnsupportedModelError(f"{where} has no model.safetensors weights (found: "
                                    f"{', '.join(sorted(present)[:12]) or 'no files'}). Choose a model that ships "
                                    "model.safetensors.")
    extras = [n for n in (*TOKENIZER_FILES, *POOLING_FILES) if n in present]
    extras += sorted(n for n in present if _POOLING_CONFIG.match(n))
    # config.json last: a snapshot with config.json was completely downloaded (see _cached_snapshot).
    return [*weights, *extras, "config.json"]


def _shards(index_file: Path, sizes: dict[str, int | None], where: str) -> list[str]:
    try:
        shards = sorted(set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InvalidModelError(f"{where}: {SAFETENSORS_INDEX} is not a valid safetensors index ({e}).") from e
    missing = [s for s in shards if s not in sizes]
    if missing or not shards:
        raise InvalidModelError(f"{where}: {SAFETENSORS_INDEX} lists weight shards the repo does not have: "
                                f"{', '.join(missing) or '(none listed)'}. The repo is broken; try another revision.")
    return shards


# ---------------------------------------------------------------------------------------------------------------
# The cache


def _cached_snapshot(repo_id: str, revision: str | None, cache: Path) -> tuple[Path, str] | None:
    """The complete snapshot of repo_id@revision in the cache, as (folder, commit sha), or None."""
    repo = _repo_folder(cache, repo_id)
    rev = revision or "main"
    sha = None
    if _COMMIT.match(rev):
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


def _cached_source(ref: ModelRef, cache: Path, notice: str) -> ModelSource | None:
    found = _cached_snapshot(str(ref.repo_id), ref.revision, cache)
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


def _write_ref(repo_folder: Path, revision: str, sha: str) -> None:
    """Point refs/<revision> at sha (what huggingface_hub does), atomically, only after a complete download."""
    if sha.startswith(revision):
        return  # a commit (or its prefix) is not a ref
    ref = repo_folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + f".{os.getpid()}.tmp")
    tmp.write_text(sha, encoding="utf-8")
    os.replace(tmp, ref)


# ---------------------------------------------------------------------------------------------------------------
# Downloads


class _Tracker:
    """Turns per-file byte counts into one "download" progress stream; raises CancelledError between chunks."""

    def __init__(self, progress: ProgressFn | None, cancel: threading.Event | None, total: int | None):
        self.progress, self.cancel, self.total = progress, cancel, total
        self.done = 0  # bytes of finished files
        self.current = 0  # bytes of the file being downloaded
        self.name = ""

    def emit(self) -> None:
        done = self.done + self.current
        report(self.progress, "download", done if self.total is None else min(done, self.total), self.total,
               f"Downloading {self.name}" if self.name else "Downloaded", unit="B")

    def chunk(self, n: float) -> None:
        self.current = max(0, self.current + int(n))  # huggingface_hub rolls back (n < 0) when a resume restarts
        self.emit()
        check_cancel(self.cancel)

    def finish(self, size: int) -> None:
        self.done += size
        self.current = 0
        self.emit()


def _bar_class(tracker: _Tracker):
    """A silent tqdm that feeds the tracker: huggingface_hub's hook into each chunk it downloads."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            tracker.chunk(n or 0)
            return super().update(n)

        def update_transfer(self, n=1):  # network bytes (Xet); progress counts bytes written, via update()
            pass

        def set_transfer_postfix_str(self, *args, **kwargs):
            pass

    return Bar


def _download(ref: ModelRef, token: str | None, progress: ProgressFn | None,
              cancel: threading.Event | None, cache: Path) -> ModelSource:
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = _hub_endpoint()
    repo_id, rev = str(ref.repo_id), ref.revision or "main"
    report(progress, "download", 0, None, f"Looking up {ref.label} on the Hub", unit="B")
    info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=rev, files_metadata=True, timeout=20)
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size) for s in (info.siblings or [])}
    names = select_files(list(sizes), where=f"{ref.label} on the Hub")
    sha = info.sha or rev  # a mirror that hides the sha: the first download tells us
    known = all(sizes[n] is not None for n in names)  # sizes come with files_metadata=True
    tracker = _Tracker(progress, cancel, sum(sizes[n] or 0 for n in names) if known else None)
    bar = _bar_class(tracker)

    def fetch(name: str) -> Path:
        nonlocal sha
        check_cancel(cancel)
        tracker.name = name
        local = Path(hf_hub_download(repo_id, name, revision=sha, cache_dir=cache, endpoint=endpoint, token=token,
                                     tqdm_class=bar))
        if not _COMMIT.match(sha):
            sha = local.parents[len(Path(name).parts) - 1].name
        tracker.finish(sizes[name] or 0)
        return local

    tracker.emit()
    queue = list(names)
    if queue[0] == SAFETENSORS_INDEX:
        index = fetch(queue.pop(0))
        shards = _shards(index, sizes, ref.label)
        if tracker.total is not None and all(sizes[s] is not None for s in shards):
            tracker.total += sum(sizes[s] or 0 for s in shards)
        else:
            tracker.total = None
        queue = shards + queue
    for name in queue:
        fetch(name)
    snapshot = _repo_folder(cache, repo_id) / "snapshots" / sha
    _write_ref(_repo_folder(cache, repo_id), rev, sha)
    return ModelSource(path=snapshot, ref=ref, weight_files=weight_files(snapshot), revision=sha)


def _unreachable(e: BaseException) -> bool:
    """No connection, DNS, proxy, TLS, timeouts, a server that died, a Hub that is down or throttling."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(e, hf.HfHubHTTPError) and e.response is not None:
        return e.response.status_code in (408, 429) or e.response.status_code >= 500
    return isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError, hf.FileMetadataError,
                          httpx2.TransportError, ConnectionError, TimeoutError)) or (
        isinstance(e, OSError) and "Consistency check failed" in str(e))  # a transfer cut short


def _translate(e: BaseException, ref: ModelRef) -> PocketError | None:
    """The one place huggingface_hub failures become our errors; None for failures we do not know."""
    from huggingface_hub import errors as hf

    login = ("log in with `hf auth login` (formerly `huggingface-cli login`) or set HF_TOKEN to a token that "
             "can read it")
    if isinstance(e, hf.GatedRepoError):
        return AccessDeniedError(f"{ref.repo_id} is a gated model. Open https://huggingface.co/{ref.repo_id}, "
                                 "accept its licence with your account, then log in with `hf auth login` "
                                 "(formerly `huggingface-cli login`) and try again.")
    if isinstance(e, hf.RevisionNotFoundError):
        return ModelNotFoundError(f"{ref.repo_id} has no revision {ref.revision or 'main'!r} on the Hub. Check the "
                                  "branch, tag or commit after '@' (see 'Files and versions' on the model page).")
    if isinstance(e, hf.RepositoryNotFoundError):
        return ModelNotFoundError(f"{ref.repo_id} was not found on the Hub. Check the spelling (org/name). If it is "
                                  f"a private model, {login}.")
    if isinstance(e, hf.RemoteEntryNotFoundError):
        return ModelNotFoundError(f"A file of {ref.label} disappeared from the Hub during the download. Try again, "
                                  "or pin a commit with '@<sha>'.")
    if isinstance(e, hf.HFValidationError):
        return ModelNotFoundError(f"{ref.text!r} is not a valid Hub model id ({e}).")
    if isinstance(e, hf.HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        if status in (401, 403):
            return AccessDeniedError(f"The Hub refused access to {ref.label} (HTTP {status}): {login}. For a gated "
                                     f"model, also accept its licence on https://huggingface.co/{ref.repo_id}.")
        return ModelNotFoundError(f"The Hub could not serve {ref.label} (HTTP {status}). Check the model id and "
                                  "revision.")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"Cannot write {ref.label} into the Hugging Face cache {hub_cache_dir()} ({e.strerror}). "
                          "Free some disk space or point HF_HUB_CACHE at a writable folder.")
    return None


def resolve(ref: str | ModelRef, *, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            token: str | None = None) -> ModelSource:
    """Turn a reference into a local model folder, downloading what is needed from the Hub.

    `token=None` uses the standard huggingface_hub login (`hf auth login`, HF_TOKEN). Progress reports bytes
    (stage "download", unit "B"); `cancel` is checked between files and between chunks (CancelledError).
    """
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    if ref.is_local:
        return local_source(ref)
    check_cancel(cancel)
    cache = hub_cache_dir()
    if hub_offline():
        source = _cached_source(ref, cache, "Offline mode (HF_HUB_OFFLINE is set): using the copy of {repo} in "
                                            "your Hugging Face cache (revision {short}).")
        if source is None:
            raise OfflineError(f"HF_HUB_OFFLINE is set, so the Hub is not contacted, and {ref.label} is not in your "
                               f"Hugging Face cache ({cache}). Unset HF_HUB_OFFLINE and connect to the internet to "
                               "download it once, or pick a local model folder.")
        return source
    try:
        return _download(ref, token, progress, cancel, cache)
    except PocketError:
        raise
    except Exception as e:  # noqa: BLE001 - translated precisely below; unknown errors re-raise unchanged
        if not _unreachable(e):
            error = _translate(e, ref)
            if error is None:
                raise
            raise error from e
        reason = _reason(e)
        log.warning("The Hub cannot be reached (%s); looking for %s in the cache", reason, ref.label)
        source = _cached_source(ref, cache, "The Hub cannot be reached; using the copy of {repo} in your Hugging "
                                            "Face cache (revision {short}).")
        if source is None:
            raise OfflineError(f"The Hugging Face Hub cannot be reached ({reason}) and {ref.label} is not in your "
                               f"Hugging Face cache ({cache}). Check your internet connection, proxy or HF_ENDPOINT "
                               "and try again, or pick a local model folder.") from e
        return source


def _reason(e: BaseException) -> str:
    """A short human cause for an unreachable Hub, from the exception chain."""
    import httpx2

    seen = e
    while seen is not None:
        if isinstance(seen, httpx2.TimeoutException):
            return "the connection timed out"
        if isinstance(seen, (httpx2.ConnectError, ConnectionRefusedError)):
            return f"cannot connect to {_hub_endpoint()}"
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 400:
            return f"the Hub answered HTTP {status}"
        if type(seen).__name__ == "OfflineModeIsEnabled":
            return "huggingface_hub is in offline mode"
        seen = seen.__cause__ or seen.__context__
    return type(e).__name__


# ---------------------------------------------------------------------------------------------------------------
# Search (the GUI's "Choose a model" page)


@dataclass(frozen=True)
class HubModel:
    """One search hit, with whether Pocket NLP can convert it and, if not, why (in plain words)."""
    repo_id: str
    task: str  # the task searched for (a key of app.core.tasks.TASKS)
    downloads: int = 0
    likes: int = 0
    convertible: bool = False
    reason: str = ""  # why not convertible; "" when it is
    architecture: str = ""


def _convertibility(info) -> tuple[bool, str, str]:
    from app.core.spec import supported_architectures

    tags = set(getattr(info, "tags", None) or ())
    config = getattr(info, "config", None) or {}
    architectures = list(config.get("architectures") or ()) if isinstance(config, dict) else []
    arch = architectures[0] if architectures else ""
    if getattr(info, "gated", False):
        return False, "gated: accept its licence on the Hub and log in first", arch
    if "safetensors" not in tags and getattr(info, "safetensors", None) is None:
        return False, "no safetensors weights", arch
    if arch and arch not in supported_architectures():
        return False, f"{arch} is not an architecture Pocket NLP converts", arch
    if not arch:
        return False, "no architecture in its config", arch
    return True, "", arch


def search_models(query: str, task: str = "text-classification", limit: int = 30, *,
                  token: str | None = None) -> list[HubModel]:
    """Hub models matching `query` for a task (a key of app.core.tasks.TASKS), most downloaded first (network;
    call it off the GUI thread)."""
    from app.core.tasks import TASKS, get_task

    if task not in TASKS:
        raise ValueError(f"task: must be one of {', '.join(TASKS)} (got {task!r})")
    if limit < 1:
        raise ValueError(f"limit: must be at least 1 (got {limit})")
    if hub_offline():
        raise OfflineError("Offline mode is on, so the Hub is not searched. Pick a model from your cache or a "
                           "folder, or turn offline mode off in Settings.")
    from huggingface_hub import HfApi

    ref = ModelRef(text=query or "search", repo_id=query or "search")
    try:
        infos = list(HfApi(endpoint=_hub_endpoint(), token=token).list_models(
            search=query.strip() or None, pipeline_tag=get_task(task).hub_tags[0], sort="downloads", limit=limit,
            expand=["downloads", "likes", "pipeline_tag", "tags", "config", "gated"]))
    except Exception as e:  # noqa: BLE001 - translated at this boundary
        if _unreachable(e):
            raise OfflineError(f"The Hugging Face Hub cannot be reached ({_reason(e)}). Check your connection, or "
                               "pick a model from your cache or a folder.") from e
        error = _translate(e, ref)
        if error is None:
            raise
        raise error from e
    hits = []
    for info in infos:
        ok, reason, arch = _convertibility(info)
        hits.append(HubModel(repo_id=info.id, task=task,
                             downloads=int(getattr(info, "downloads", 0) or 0), likes=int(getattr(info, "likes", 0) or 0),
                             convertible=ok, reason=reason, architecture=arch))
    return hits
