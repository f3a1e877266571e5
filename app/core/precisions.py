"""Which parts of an INT8 model run in 8 bits and which stayed FP32, and why; and the code that runs it elsewhere.

`node_precisions` reads the INT8 graph (no weights needed) and the guard's choice from the manifest: the
matrix products and embedding tables it quantized, the ones it left in full precision (the most sensitive
ones, outlier channels, the task head) and the attention. `code_snippet` is a short, self-contained Python
program using only onnxruntime, tokenizers and numpy that runs an exported folder, for users who take the model
to their own application.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INT8_OPS = {"DynamicQuantizeMatMul": "matrix product, 8-bit weights and activations",
            "MatMulInteger": "matrix product in 8-bit integers",
            "MatMulNBits": "matrix product with 8-bit weights",
            "QAttention": "query/key/value product in 8-bit integers, then attention in full precision",
            "GatherBlockQuantized": "embedding table stored in 8 bits, one scale per row"}


@dataclass(frozen=True)
class NodePrecision:
    name: str  # the node's path in the graph, e.g. /encoder/layer.3/ffn/output/MatMul
    op: str
    precision: str  # "INT8" or "FP32"
    why: str

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "precision": self.precision, "why": self.why}


def node_precisions(int8_onnx: Path, quantization: dict) -> list[NodePrecision]:
    from app.core.onnxfile import read_model

    model, _ = read_model(Path(int8_onnx))  # the graph; weights stay on disk
    kept = set(((quantization.get("chosen") or {}).get("config") or {}).get("keep_fp32") or ())
    rows = []
    for n in model.graph.node:
        if n.op_type in INT8_OPS:
            rows.append(NodePrecision(n.name, n.op_type, "INT8", INT8_OPS[n.op_type]))
        elif n.op_type == "Gather" and n.name.endswith("/Gather_q"):  # the int8 table a tied LM head also reads
            rows.append(NodePrecision(n.name, n.op_type, "INT8", INT8_OPS["GatherBlockQuantized"]))
        elif n.op_type == "MatMul":
            if n.name in kept:
                why = "kept by the accuracy guard: among the products INT8 changes most"
            elif "/outliers/" in n.name:
                why = "the few input channels with unusually large values, kept in full precision"
            elif n.name.startswith(("/pooler", "/classifier", "/qa_outputs", "/head", "/lm_head")):
                why = "the task head: small, and it decides the answer"
            else:
                why = "left in full precision"
            rows.append(NodePrecision(n.name, n.op_type, "FP32", why))
        elif n.op_type in ("MultiHeadAttention", "Attention"):
            rows.append(NodePrecision(n.name, n.op_type, "FP32", "attention scores and mixing, in full precision"))
    return rows


def code_snippet(folder: Path, spec: dict) -> str:
    """A Python program that runs the model in `folder` on one text (or question and context)."""
    task = spec.get("task", "")
    inputs = list(spec.get("input_names") or ("input_ids", "attention_mask"))
    lines = [
        "# Runs a Pocket NLP model with onnxruntime + tokenizers only: pip install onnxruntime tokenizers numpy",
        "", "import json", "", "import numpy as np", "import onnxruntime as ort", "from tokenizers import Tokenizer", "",
        f"folder = {str(folder)!r}",
        'tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")',
        'session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])',
    ]
    if task == "text-generation":  # greedy, the prompt run again each step with an empty cache: short and plain
        heads, d = int(spec.get("num_heads", 1)), int(spec.get("hidden_size", 1)) // int(spec.get("num_heads", 1))
        return "\n".join(lines + [
            'ids = tokenizer.encode("The city council approved").ids',
            f"empty = np.zeros((1, {heads}, 0, {d}), np.float32)",
            'past = {i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values")}',
            "for _ in range(20):",
            '    feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),',
            '            "position_ids": np.arange(len(ids), dtype=np.int64)[None], **past}',
            '    ids.append(int(session.run(["logits"], feed)[0][0, -1].argmax()))',
            "print(tokenizer.decode(ids))"]) + "\n"
    if task == "question-answering":
        lines += ['question, context = "Where is the tower?", "The tower stands in Paris."',
                  "enc = tokenizer.encode(question, context)"]
    else:
        lines += ['enc = tokenizer.encode("Type your text here.")']
    feed = {"input_ids": "enc.ids", "attention_mask": "enc.attention_mask", "token_type_ids": "enc.type_ids"}
    lines.append("feed = {" + ", ".join(f'"{n}": np.array([{feed[n]}], dtype=np.int64)' for n in inputs
                                         if n in feed) + "}")
    lines.append("outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))")
    if task == "text-classification":
        lines += ['labels = json.load(open(f"{folder}/config.json"))["id2label"]',
                  'logits = outputs["logits"][0]',
                  "probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()",
                  'print(labels[str(int(probs.argmax()))], float(probs.max()))']
    elif task == "question-answering":
        lines += ['start, end = outputs["start_logits"][0], outputs["end_logits"][0]',
                  "in_context = np.array([s == 1 for s in enc.sequence_ids], bool)",
                  "start, end = np.where(in_context, start, -np.inf), np.where(in_context, end, -np.inf)",
                  "i = int(start.argmax()); j = i + int(end[i:i + 30].argmax())",
                  "print(context[enc.offsets[i][0]:enc.offsets[j][1]])"]
    elif task == "token-classification":
        lines += ['labels = json.load(open(f"{folder}/config.json"))["id2label"]',
                  'tags = outputs["logits"][0].argmax(-1)',
                  "print([(t, labels[str(int(k))]) for t, k in zip(enc.tokens, tags) if labels[str(int(k))] != 'O'])"]
    elif task == "feature-extraction":
        lines += ['vector = outputs.get("sentence_embedding", outputs[next(iter(outputs))])[0]',
                  "print(vector.shape, vector[:5])"]
    else:
        lines += ["print({k: v.shape for k, v in outputs.items()})"]
    return "\n".join(lines) + "\n"

