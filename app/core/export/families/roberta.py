"""RoBERTa, XLM-RoBERTa and CamemBERT: positions after padding_idx that skip pads, one token-type row."""

from onnx import TensorProto

from app.core.export.families.base import EncoderFamily

ROBERTA_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                          "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


class Roberta(EncoderFamily):
    class_prefixes = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert"}
    uses_token_types = False  # its single token-type row is folded into the position table
    default_pad_token_id = 1
    special_tokens = ROBERTA_SPECIAL_TOKENS
    prefix = "roberta."

    @classmethod
    def position_offset(cls, pad_token_id: int) -> int:
        return pad_token_id + 1

    def positions(self, input_ids: str) -> tuple[str, str]:
        #  ids ─ Equal(pad) ─ Not ─ Cast ─ CumSum ─ Mul(mask) ─ Add(pad) ─► positions (pads keep pad)
        s, g, p = self.spec, self.g, self.prefix + "embeddings."
        not_pad = g.node("Cast", [g.node("Not", [g.node("Equal", [input_ids, g.const(s.pad_token_id)],
                                                          "/embeddings/positions/Equal")], "/embeddings/positions/Not")],
                         "/embeddings/positions/Cast", to=TensorProto.INT64)
        cum = g.node("CumSum", [not_pad, g.const(1)], "/embeddings/positions/CumSum")
        positions = g.node("Add", [g.node("Mul", [cum, not_pad], "/embeddings/positions/Mul"), g.const(s.pad_token_id)],
                           "/embeddings/positions/Add")
        shape = (s.max_position_embeddings, s.embedding_size)
        table = self.combined(p + "position_embeddings.weight+token_type_embeddings.weight[0]", shape,
                              [p + "position_embeddings.weight", p + "token_type_embeddings.weight"],
                              lambda pos, tt: pos + tt[0])
        self._check_shape(p + "position_embeddings.weight", shape)
        return positions, table

    def sequence_head(self, cls: str, num_labels: int) -> str:
        return self.dense_head(cls, num_labels, "tanh")
