"""Hub search for the Choose page: models of a task, most downloaded first, each marked convertible or not."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import OfflineError
from app.core.hub import failures
from app.core.hub.cache import hub_endpoint, hub_offline
from app.core.hub.refs import ModelRef


def quick_probe(endpoint: str, timeout: float = 3.0) -> str:
    """"" when the endpoint's host accepts a connection within `timeout` seconds, else why not: a search fails in
    seconds when offline instead of waiting for huggingface_hub's retries (~23 s)."""
    import os
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return ""  # behind a proxy the host itself may be unreachable by design: let the request decide
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return ""
    except socket.gaierror:
        return f"the name {url.hostname} cannot be resolved (no network or DNS)"
    except TimeoutError:
        return f"{url.hostname} did not answer within {timeout:g} s"
    except OSError as e:
        return f"cannot connect to {url.hostname}:{port} ({e.strerror or e})"


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
    problem = quick_probe(hub_endpoint())
    if problem:
        raise OfflineError(f"The Hugging Face Hub cannot be reached ({problem}). Check your connection, or pick a "
                           "model from your cache or a folder.")
    from huggingface_hub import HfApi

    ref = ModelRef(text=query or "search", repo_id=query or "search")
    try:
        infos = list(HfApi(endpoint=hub_endpoint(), token=token).list_models(
            search=query.strip() or None, pipeline_tag=get_task(task).hub_tags[0], sort="downloads", limit=limit,
            expand=["downloads", "likes", "pipeline_tag", "tags", "config", "gated"]))
    except Exception as e:
        if failures.unreachable(e):
            raise OfflineError(f"The Hugging Face Hub cannot be reached ({failures.reason(e)}). Check your connection, or "
                               "pick a model from your cache or a folder.") from e
        error = failures.translate(e, ref)
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
