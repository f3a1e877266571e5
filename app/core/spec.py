"""config.json → ModelSpec: which architecture, which task, which labels, which dimensions.

The spec is everything the exporter and the task code need to know about a model, read once and
validated here so later stages can trust it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any
from pathlib import Path

from app.core.errors import InvalidModelError, NotAModelFolderError, UnsupportedModelError

SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")


def supported_architectures() -> list[str]:
    """Every transformers class name Pocket NLP converts: each family's prefixes × each task's heads."""
    from app.core.export.families import FAMILIES
    from app.core.tasks import all_tasks

    heads = [h for t in all_tasks() for h in t.architecture_suffixes]
    return [prefix + h for family in dict.fromkeys(FAMILIES.values())
            for prefix in family.class_prefixes.values() for h in heads]


@dataclass(frozen=True)
class ModelSpec:
    model_type: str  # as config.json says: "bert", "xlm-roberta", ...
    family: str  # the family module that builds it: "bert", "roberta", ...
    architecture: str  # e.g. "BertForSequenceClassification"
    task: str  # a key of app.core.tasks.TASKS
    labels: tuple[str, ...]  # id order; empty for feature extraction and QA
    multi_label: bool  # sigmoid per label instead of softmax
    vocab_size: int
    hidden_size: int
    embedding_size: int  # ELECTRA can embed smaller than hidden and project up
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int  # 0 when the model has no token types (DistilBERT)
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int
    # family-specific hyper-parameters beyond the common ones (relative positions, rotary θ, ...), read by the
    # family's `read_dims` under the key "options" and read back by its builder
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def family_class(self):
        from app.core.export.families import family_of

        return family_of(self.model_type)

    @property
    def input_names(self) -> tuple[str, ...]:
        """ONNX inputs, as Optimum names them; token types only where they carry information."""
        if self.family_class.has_token_types(self):
            return ("input_ids", "attention_mask", "token_type_ids")
        return ("input_ids", "attention_mask")

    @property
    def output_names(self) -> tuple[str, ...]:
        from app.core.tasks import get_task

        return get_task(self.task).output_names

    @property
    def position_offset(self) -> int:
        return self.family_class.position_offset(self.pad_token_id)

    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings - self.position_offset

    def to_dict(self) -> dict:
        return asdict(self) | {"input_names": list(self.input_names), "output_names": list(self.output_names)}


def load_config(folder: Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise NotAModelFolderError(f"{folder} has no config.json, so it is not a Hugging Face model folder. "
                                "Pick the folder that holds config.json and the *.safetensors weights.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidModelError(f"{path} is not valid JSON ({e}). Re-download the model.") from e
    if not isinstance(config, dict):
        raise InvalidModelError(f"{path} must hold a JSON object. Re-download the model.")
    return config


def spec_from_config(config: dict, *, where: str = "config.json") -> ModelSpec:
    from app.core.export.families import FAMILIES
    from app.core.tasks import all_tasks, get_task, task_of_architecture

    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else ""
    families = ", ".join(dict.fromkeys(p for f in FAMILIES.values() for p in f.class_prefixes.values()))
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"{where}: model type {model_type!r} ({architecture or 'no architecture given'}) is not supported; "
            f"Pocket NLP converts {families} models.", supported=tuple(supported_architectures()))
    family = FAMILIES[model_type]
    task = task_of_architecture(architecture) if architecture else "feature-extraction"
    if task is None:
        heads = ", ".join(dict.fromkeys(h for t in all_tasks() for h in t.architecture_suffixes))
        raise UnsupportedModelError(
            f"{where}: architecture {architecture!r} is not supported; Pocket NLP converts the heads {heads}.",
            supported=tuple(supported_architectures()))

    def need(*keys: str, default=None):
        for key in keys:
            if key in config:
                return config[key]
        if default is not None:
            return default
        raise InvalidModelError(f"{where} lacks {keys[0]!r}, which a {model_type} model needs. "
                                "Re-download the model or fix its config.json.")

    try:
        dims = family.read_dims(config, need)
        vocab_size = int(need("vocab_size"))
        max_positions = int(need("max_position_embeddings", "n_positions", default=512))  # n_positions: GPT-2
        pad_token_id = int(config.get("pad_token_id") if config.get("pad_token_id") is not None
                           else family.default_pad_token_id)
    except (InvalidModelError, UnsupportedModelError):  # a family's own refusal (ValueErrors too): as it says
        raise
    except (TypeError, ValueError) as e:
        raise InvalidModelError(f"{where} has a dimension that is not a number ({e}).") from e
    if dims["hidden_act"] not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(f"{where}: activation {dims['hidden_act']!r} is not supported "
                                    f"(supported: {', '.join(SUPPORTED_ACTIVATIONS)}).")
    if dims["hidden_size"] % dims["num_heads"]:
        raise InvalidModelError(f"{where}: hidden size {dims['hidden_size']} is not divisible by "
                                f"{dims['num_heads']} attention heads.")

    labels: tuple[str, ...] = ()
    multi_label = False
    if get_task(task).has_labels:
        id2label = config.get("id2label") or {}
        num_labels = int(config.get("num_labels") or len(id2label) or 2)
        try:
            by_id = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError) as e:
            raise InvalidModelError(f"{where}: id2label keys must be integers ({e}).") from e
        labels = tuple(by_id.get(i, f"LABEL_{i}") for i in range(max(num_labels, len(by_id))))
        multi_label = config.get("problem_type") == "multi_label_classification"

    return ModelSpec(model_type=model_type, family=family.__module__.rsplit(".", 1)[-1],
                     architecture=architecture or "base model", task=task, labels=labels, multi_label=multi_label,
                     vocab_size=vocab_size, max_position_embeddings=max_positions, pad_token_id=pad_token_id,
                     **dims)


def load_spec(folder: Path) -> ModelSpec:
    return spec_from_config(load_config(folder), where=str(Path(folder) / "config.json"))
