"""Model references → a local folder with config.json, safetensors weights and tokenizer files.

A reference is `org/name`, `org/name@revision`, a Hub URL (`https://huggingface.co/org/name`,
`.../tree/REV`) or a local folder. Hub models go through huggingface_hub into the standard HF cache.
We never unpickle: repos with only `pytorch_model.bin` (or only TF/Flax weights) are refused.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import InvalidModelError, ModelNotFoundError, UnsupportedModelError
from app.core.progress import ProgressFn

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")


@dataclass(frozen=True)
class ModelRef:
    text: str  # what the user typed
    repo_id: str | None = None  # Hub models
    revision: str | None = None
    path: Path | None = None  # local folders

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        text = str(text).strip()
        if not text:
            raise ModelNotFoundError("No model given. Enter a Hub id like 'org/name', a Hub URL or a folder.")
        path = Path(text).expanduser()
        if path.is_dir():
            return cls(text=text, path=path.resolve())
        url = re.match(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?!datasets/|spaces/)"
                       r"(?P<repo>[\w.\-]+(?:/[\w.\-]+)?)(?:/(?:tree|blob|resolve)/(?P<rev>[^/?#]+))?/?(?:[?#].*)?$",
                       text)
        if url:
            return cls(text=text, repo_id=url["repo"], revision=url["rev"])
        hub = re.match(r"^(?P<repo>[\w.\-]+(?:/[\w.\-]+)?)(?:@(?P<rev>[\w.\-/]+))?$", text)
        if hub and not text.startswith((".", "/", "~")) and "/" in hub["repo"]:
            return cls(text=text, repo_id=hub["repo"], revision=hub["rev"])
        if hub and "/" not in hub["repo"] and not path.exists():
            # Legacy canonical ids ("bert-base-uncased") are still Hub ids.
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
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.ref.repo_id or self.path.name


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
        raise UnsupportedModelError(
            f"{folder} has only PyTorch pickle weights (pytorch_model.bin). Pocket NLP never loads pickles, "
            "because unpickling can run arbitrary code. Choose a model that ships model.safetensors "
            "(most do; look for a 'safetensors' revision or a converted copy on the Hub).")
    if any((folder / name).exists() for name in OTHER_WEIGHTS):
        raise UnsupportedModelError(f"{folder} has only TensorFlow/Flax weights. Pocket NLP reads safetensors "
                                    "weights; choose a model that ships model.safetensors.")
    if not (folder / "config.json").is_file():
        raise InvalidModelError(f"{folder} is not a model folder: it has no config.json and no weights. Pick the "
                                "folder that holds config.json and model.safetensors.")
    raise InvalidModelError(f"{folder} has a config.json but no model.safetensors. Re-download the model.")


def local_source(ref: ModelRef, *, revision: str | None = None, notice: str = "") -> ModelSource:
    assert ref.path is not None
    return ModelSource(path=ref.path, ref=ref, weight_files=weight_files(ref.path), revision=revision, notice=notice)


def resolve(ref: str | ModelRef, *, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            token: str | None = None) -> ModelSource:
    """Turn a reference into a local model folder, downloading what is needed from the Hub."""
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    if ref.is_local:
        return local_source(ref)
    raise ModelNotFoundError(f"Downloading {ref.repo_id} from the Hub is not available yet.")
