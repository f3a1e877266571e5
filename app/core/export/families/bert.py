"""BERT, and MiniLM (its checkpoints are BERT): the base builder's layout as it is."""

from app.core.export.families.base import EncoderFamily


class Bert(EncoderFamily):
    class_prefixes = {"bert": "Bert"}
