"""What the user typed → a `ModelRef` (Hub id, Hub URL or folder); what was resolved → a `ModelSource`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from app.core.errors import InvalidModelError, ModelNotFoundError

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
    path: Path  # folder with config.json, *.safetensors (or an exported model.onnx) and tokenizer files
    ref: ModelRef
    weight_files: tuple[Path, ...]
    revision: str | None = None  # commit sha for Hub models
    notice: str = ""  # something the user should know, e.g. "offline: using the cached copy"
    onnx_file: Path | None = None  # an `export` folder: the FP32 graph is already built (no weights beside it)

    @property
    def name(self) -> str:
        return self.ref.repo_id or self.path.name
