"""Downloads from the Hub into the HF cache, with byte progress and Cancel, and `resolve`: reference → folder.

Offline behaviour: with `HF_HUB_OFFLINE=1` only the cache is used; when the Hub cannot be reached, a cached copy
is used and `ModelSource.notice` says so; with nothing cached, `OfflineError` says what to do. A repo with only
pickle weights on its main branch often has an open pull request by the Hub's conversion bot that adds
model.safetensors (`refs/pr/N`, which transformers itself loads from): that revision is used, and the notice says
so. huggingface_hub is imported inside functions so `import app.core.hub` stays cheap.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from app.core.errors import InvalidModelError, OfflineError, PocketError
from app.core.hub.cache import COMMIT, cached_source, hub_cache_dir, hub_endpoint, hub_offline, repo_folder, write_ref
from app.core.hub.failures import reason, translate, unreachable
from app.core.hub.files import SAFETENSORS_INDEX, PickleOnlyError, local_source, read_index, select_files, weight_files
from app.core.hub.refs import ModelRef, ModelSource
from app.core.progress import ProgressFn, check_cancel, report

log = logging.getLogger(__name__)
CONVERSION_BOT = "SFconvertbot"  # the Hub's bot that opens "Adding `safetensors` variant" pull requests


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


def _conversion_pr(api, repo_id: str) -> int | None:
    """The open pull request of the Hub's safetensors conversion bot, as transformers looks it up; None when
    there is none or the Hub cannot list them (a mirror without the discussions API)."""
    try:
        for discussion in api.get_repo_discussions(repo_id, author=CONVERSION_BOT, discussion_type="pull_request",
                                                   discussion_status="open"):
            if discussion.is_pull_request and discussion.author == CONVERSION_BOT and discussion.status == "open":
                return discussion.num
    except Exception as e:  # noqa: BLE001 - best effort: the pickle-only refusal stands
        log.info("cannot list the pull requests of %s: %s", repo_id, e)
    return None


def _download(ref: ModelRef, token: str | None, progress: ProgressFn | None,
              cancel: threading.Event | None, cache: Path) -> ModelSource:
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    repo_id, rev = str(ref.repo_id), ref.revision or "main"
    report(progress, "download", 0, None, f"Looking up {ref.label} on the Hub", unit="B")
    info = api.model_info(repo_id, revision=rev, files_metadata=True, timeout=20)
    notice = ""
    try:
        select_files([s.rfilename for s in info.siblings or []], where=f"{ref.label} on the Hub")
    except PickleOnlyError:
        pr = _conversion_pr(api, repo_id) if ref.revision is None else None
        if pr is None:
            raise
        rev = f"refs/pr/{pr}"
        notice = (f"{repo_id} has only pickle weights on main; using model.safetensors from the Hub's conversion "
                  f"pull request #{pr} (revision {rev}), as transformers does. Nothing was unpickled.")
        report(progress, "download", 0, None, notice, unit="B")
        info = api.model_info(repo_id, revision=rev, files_metadata=True, timeout=20)
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size) for s in (info.siblings or [])}
    names = select_files(list(sizes), where=f"{repo_id}@{rev} on the Hub" if notice else f"{ref.label} on the Hub")
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
        if not COMMIT.match(sha):
            sha = local.parents[len(Path(name).parts) - 1].name
        tracker.finish(sizes[name] or 0)
        return local

    tracker.emit()
    queue = list(names)
    if queue[0] == SAFETENSORS_INDEX:
        index = fetch(queue.pop(0))
        shards = read_index(index, ref.label)
        missing = [s for s in shards if s not in sizes]
        if missing:
            raise InvalidModelError(f"{ref.label}: {SAFETENSORS_INDEX} lists weight shards the repo does not "
                                    f"have: {', '.join(missing)}. The repo is broken; try another revision.")
        if tracker.total is not None and all(sizes[s] is not None for s in shards):
            tracker.total += sum(sizes[s] or 0 for s in shards)
        else:
            tracker.total = None
        queue = shards + queue
    for name in queue:
        fetch(name)
    snapshot = repo_folder(cache, repo_id) / "snapshots" / sha
    write_ref(repo_folder(cache, repo_id), rev, sha)
    return ModelSource(path=snapshot, ref=ref, weight_files=weight_files(snapshot), revision=sha, notice=notice)


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
        source = cached_source(ref, cache, "Offline mode (HF_HUB_OFFLINE is set): using the copy of {repo} in "
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
    except Exception as e:
        if not unreachable(e):
            error = translate(e, ref)
            if error is None:
                raise
            raise error from e
        cause = reason(e)
        log.info("The Hub cannot be reached (%s); looking for %s in the cache", cause, ref.label)
        source = cached_source(ref, cache, "The Hub cannot be reached; using the copy of {repo} in your Hugging "
                                            "Face cache (revision {short}).")
        if source is None:
            raise OfflineError(f"The Hugging Face Hub cannot be reached ({cause}) and {ref.label} is not in your "
                               f"Hugging Face cache ({cache}). Check your internet connection, proxy or HF_ENDPOINT "
                               "and try again, or pick a local model folder.") from e
        return source


