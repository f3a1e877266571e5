"""The one boundary where huggingface_hub and httpx failures become Pocket NLP's errors.

`unreachable` says whether a failure means "the Hub cannot be reached" (then the cache is tried), `translate`
turns the others into our error classes with what to do, `reason` gives the short cause for messages.
"""

from __future__ import annotations

import errno

from app.core.errors import AccessDeniedError, ModelNotFoundError, PocketError, StoreError
from app.core.hub.cache import hub_cache_dir, hub_endpoint
from app.core.hub.refs import ModelRef


def unreachable(e: BaseException) -> bool:
    """No connection, DNS, proxy, TLS, timeouts, a server that died, a Hub that is down or throttling."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(e, hf.HfHubHTTPError) and e.response is not None:
        return e.response.status_code in (408, 429) or e.response.status_code >= 500
    return isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError, hf.FileMetadataError,
                          httpx2.TransportError, ConnectionError, TimeoutError)) or (
        isinstance(e, OSError) and "Consistency check failed" in str(e))  # a transfer cut short


def translate(e: BaseException, ref: ModelRef) -> PocketError | None:
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
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"The disk is full: cannot write {ref.label} into the Hugging Face cache "
                          f"{hub_cache_dir()} ({e.strerror}). Free some disk space or point HF_HUB_CACHE at a "
                          "folder on another disk.")
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"No permission to write {ref.label} into the Hugging Face cache {hub_cache_dir()} "
                          f"({e.strerror}). Make the folder writable or point HF_HUB_CACHE at a writable folder.")
    return None



def reason(e: BaseException) -> str:
    """A short human cause for an unreachable Hub, from the exception chain."""
    import httpx2

    seen = e
    while seen is not None:
        if isinstance(seen, httpx2.TimeoutException):
            return "the connection timed out"
        if isinstance(seen, (httpx2.ConnectError, ConnectionRefusedError)):
            return f"cannot connect to {hub_endpoint()}"
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 400:
            return f"the Hub answered HTTP {status}"
        if type(seen).__name__ == "OfflineModeIsEnabled":
            return "huggingface_hub is in offline mode"
        if isinstance(seen, OSError) and "Consistency check failed" in str(seen):
            return "the download was cut short"
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__.endswith("TransportError"):
            return "the connection broke off"
        seen = seen.__cause__ or seen.__context__
    return "the connection failed"


