"""ELECTRA: BERT's encoder, embeddings that may be narrower than the hidden size (projected up), a GELU head."""

from app.core.export.families.base import EncoderFamily


class Electra(EncoderFamily):
    class_prefixes = {"electra": "Electra"}
    prefix = "electra."

    def embeddings(self, input_ids: str, token_type_ids: str | None) -> str:
        #  ... ─ LayerNorm ─ [embeddings_project when embedding_size != hidden_size] ─►
        x = super().embeddings(input_ids, token_type_ids)
        s = self.spec
        if s.embedding_size != s.hidden_size:
            x = self.linear(x, self.prefix + "embeddings_project", s.embedding_size, s.hidden_size,
                            "/embeddings_project")
        return x

    def sequence_head(self, cls: str, num_labels: int) -> str:
        return self.dense_head(cls, num_labels, "gelu")
