"""Model families: config.json's `model_type` → the builder subclass that knows its layout.

Adding a family is one module here (a subclass of `EncoderFamily` overriding the hooks that differ) and one
line in `FAMILIES`; `spec.py`, the tokenizer and the exporter read everything else from the class.
"""

from __future__ import annotations

from app.core.export.families.base import EncoderFamily
from app.core.export.families.bert import Bert
from app.core.export.families.deberta import DebertaV2
from app.core.export.families.distilbert import DistilBert
from app.core.export.families.electra import Electra
from app.core.export.families.gpt2 import Gpt2
from app.core.export.families.modernbert import ModernBert
from app.core.export.families.mpnet import MPNet
from app.core.export.families.roberta import Roberta

FAMILIES: dict[str, type[EncoderFamily]] = {
    "bert": Bert,
    "distilbert": DistilBert,
    "roberta": Roberta, "xlm-roberta": Roberta, "camembert": Roberta,
    "electra": Electra,
    "deberta-v2": DebertaV2,
    "gpt2": Gpt2,
    "modernbert": ModernBert,
    "mpnet": MPNet,
}


def family_of(model_type: str) -> type[EncoderFamily]:
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "EncoderFamily", "family_of"]
