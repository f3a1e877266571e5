"""DistilBERT: BERT's layers under other names, no token types, a ReLU pre-classifier head."""

from app.core.export.families.base import EncoderFamily

DISTILBERT_LAYER = dict(layer="transformer.layer.{i}.", q="attention.q_lin", k="attention.k_lin",
                        v="attention.v_lin", o="attention.out_lin", ln1="sa_layer_norm", ff1="ffn.lin1",
                        ff2="ffn.lin2", ln2="output_layer_norm")


class DistilBert(EncoderFamily):
    class_prefixes = {"distilbert": "DistilBert"}
    uses_token_types = False
    prefix = "distilbert."
    layer_names = DISTILBERT_LAYER

    @classmethod
    def read_dims(cls, config: dict, need) -> dict:
        hidden = int(need("dim", "hidden_size"))
        return dict(hidden_size=hidden, embedding_size=hidden, num_layers=int(need("n_layers")),
                    num_heads=int(need("n_heads")), intermediate_size=int(need("hidden_dim")), type_vocab_size=0,
                    layer_norm_eps=1e-12, hidden_act=str(need("activation", default="gelu")))

    def sequence_head(self, cls: str, num_labels: int) -> str:
        #  cls ─ pre_classifier ─ ReLU ─ classifier ─►
        h = self.spec.hidden_size
        pre = self.activation(self.linear(cls, "pre_classifier", h, h, "/pre_classifier"), "relu",
                              "/pre_classifier/act")
        return self.linear(pre, "classifier", h, num_labels, "/classifier")
