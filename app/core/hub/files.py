"""Which files of a model a conversion needs, and the one rule that picks its weights.

The same rule (`choose_weights`) reads a repo listing before anything is downloaded and a folder on disk:
model.safetensors, else the sharded index (its shards once it is read), else a lone *.safetensors. Pickle-only
and TF/Flax-only models are refused — Pocket NLP never unpickles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.core.errors import InvalidModelError, NotAModelFolderError, UnsupportedModelError
from app.core.hub.refs import ModelRef, ModelSource

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_WEIGHTS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "spm.model",
                   "added_tokens.json")
# Small files sentence-transformers repos use to describe pooling; the embedding task may read them.
POOLING_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_POOLING_CONFIG = re.compile(r"^\d+_Pooling/config\.json$")
EXPORTED_ONNX = "model.onnx"  # what `export` writes beside config.json and the tokenizer


class PickleOnlyError(UnsupportedModelError):
    """Only pytorch_model.bin: refused (the Hub's conversion pull request may have safetensors, see download)."""


def pickle_only_message(where: str) -> str:
    return (f"{where} has only PyTorch pickle weights (pytorch_model.bin). Pocket NLP never loads pickles, "
            "because unpickling can run arbitrary code. Choose a model that ships model.safetensors "
            "(most do; look for a 'safetensors' revision or a converted copy on the Hub).")


def choose_weights(names, *, where: str) -> list[str]:
    """The weight files among top-level `names`: [model.safetensors], [the index] or [a lone *.safetensors]."""
    present = set(names)
    top_safetensors = sorted(n for n in present if "/" not in n and n.endswith(".safetensors"))
    if SAFETENSORS in present:
        return [SAFETENSORS]
    if SAFETENSORS_INDEX in present:
        return [SAFETENSORS_INDEX]
    if len(top_safetensors) == 1:
        return top_safetensors
    if any(n in present for n in PICKLE_WEIGHTS) or any(re.match(r"^pytorch_model-\d+", n) for n in present):
        raise PickleOnlyError(pickle_only_message(where))
    if any(n in present for n in OTHER_WEIGHTS):
        raise UnsupportedModelError(f"{where} has only TensorFlow/Flax weights. Pocket NLP reads safetensors "
                                    "weights; choose a model that ships model.safetensors.")
    return []


def read_index(index_file: Path, where: str) -> list[str]:
    """The shard names a safetensors index lists."""
    try:
        shards = sorted(set(json.loads(Path(index_file).read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise InvalidModelError(f"{where}: {SAFETENSORS_INDEX} is not a valid safetensors index ({e}). "
                                "Re-download the model.") from e
    if not shards or not all(isinstance(s, str) and "/" not in s and s.endswith(".safetensors") for s in shards):
        raise InvalidModelError(f"{where}: {SAFETENSORS_INDEX} lists no usable weight shards. Re-download the model.")
    return shards


def weight_files(folder: Path) -> tuple[Path, ...]:
    """The safetensors files of a model folder, in load order; refuses pickle-only and TF/Flax-only folders."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    chosen = choose_weights(names, where=str(folder))
    if chosen == [SAFETENSORS_INDEX]:
        shards = read_index(folder / SAFETENSORS_INDEX, str(folder))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise InvalidModelError(f"{folder} lacks weight shards listed in {SAFETENSORS_INDEX}: "
                                    f"{', '.join(missing)}. Re-download the model.")
        return tuple(folder / s for s in shards)
    if chosen:
        return (folder / chosen[0],)
    if not (folder / "config.json").is_file():
        raise NotAModelFolderError(f"{folder} is not a model folder: it has no config.json and no weights. Pick the "
                                "folder that holds config.json and model.safetensors.")
    raise InvalidModelError(f"{folder} has a config.json but no model.safetensors. Re-download the model.")


def select_files(names, *, where: str = "The repo") -> list[str]:
    """The files of a repo listing a conversion needs: config.json, safetensors weights, tokenizer files.

    For sharded weights the index is listed (its shards are added once it is read). Refuses pickle-only and
    TF/Flax-only repos with UnsupportedModelError, before anything is downloaded.
    """
    present = set(names)
    if "config.json" not in present:
        raise UnsupportedModelError(f"{where} has no config.json, so it is not a Transformers model Pocket NLP "
                                    "can convert. Choose a model repo that ships config.json and model.safetensors.")
    weights = choose_weights(present, where=where)
    if not weights:
        raise UnsupportedModelError(f"{where} has no model.safetensors weights (found: "
                                    f"{', '.join(sorted(present)[:12]) or 'no files'}). Choose a model that ships "
                                    "model.safetensors.")
    extras = [n for n in (*TOKENIZER_FILES, *POOLING_FILES) if n in present]
    extras += sorted(n for n in present if _POOLING_CONFIG.match(n))
    # config.json last: a snapshot with config.json was completely downloaded (see cache.cached_snapshot).
    return [*weights, *extras, "config.json"]


def local_source(ref: ModelRef, *, revision: str | None = None, notice: str = "") -> ModelSource:
    """A folder → its source: a checkpoint (config.json + safetensors), or a folder `export` wrote (model.onnx)."""
    assert ref.path is not None
    folder = ref.path
    if (folder / EXPORTED_ONNX).is_file() and (folder / "config.json").is_file() and not any(
            folder.glob("*.safetensors")):
        return ModelSource(path=folder, ref=ref, weight_files=(), revision=revision, notice=notice,
                           onnx_file=folder / EXPORTED_ONNX)
    return ModelSource(path=folder, ref=ref, weight_files=weight_files(folder), revision=revision, notice=notice)
