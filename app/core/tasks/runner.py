"""Runner = the model's tokenizer + an ONNX Runtime session + its ModelSpec, for one exported folder.

FP32 and INT8 folders have the same layout (model.onnx, config.json, tokenizer files), so the same code runs
both. `classify` and `answer` do what transformers' text-classification and question-answering pipelines do,
timing the model calls; only the inputs the session declares are fed, as int64.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from app.core.errors import InputError, InvalidModelError
from app.core.spec import ModelSpec, load_config, spec_from_config
from app.core.tasks import classification, qa
from app.core.tasks.classification import ClassificationResult
from app.core.tasks.qa import Answer, QAOptions
from app.core.tasks.tokenizer import TextTokenizer, arrays_from, load_tokenizer

log = logging.getLogger(__name__)


def session_options(threads: int | None = None):
    """ONNX Runtime session options for every session the app creates.

    Intra-op threads spin while a run lasts, so each of a graph's hundred-odd small ops starts without waking
    a sleeping thread (MiniLM, 16 tokens: 10% less time, FP32 and INT8 alike), and stop spinning when the run
    ends (`session.force_spinning_stop`). Left spinning after a run, as ORT does by default, they steal the
    cores from the GUI thread and from the other model's session (FP32 and INT8 answer side by side): an
    interleaved pair then took 2.5x as long. The benchmarks' sessions use these options too.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def new_session(model: str | bytes, threads: int | None = None, *, prepack: bool = True):
    """An ONNX Runtime CPU session on a model file or its bytes, with `session_options`. ORT's own fusion of a
    residual Add + LayerNormalization into SkipLayerNormalization is turned off: on CPU that kernel is slower than
    the two ops (see export/families/base.py), and it fires on graphs such as DeBERTa's (measured there: INT8 1.9x
    → 2.1x faster than FP32). Without `prepack`, MatMul weights are not copied into MLAS's packed layout at load
    (a second copy of them: 140 MB on BERT-base), for sessions that run a few batches and go."""
    import onnxruntime as ort

    options = session_options(threads)
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["SkipLayerNormFusion"])


class Runner:
    """Runs one exported model. Safe to call from one worker thread at a time per task."""

    def __init__(self, folder: Path, spec: ModelSpec, tokenizer: TextTokenizer, session, *,
                 problem_type: str | None = None, load_ms: float = 0.0):
        self.folder = Path(folder)
        self.spec = spec
        self.tokenizer = tokenizer
        self.session = session
        self.problem_type = problem_type
        self.load_ms = load_ms
        self.input_names = tuple(i.name for i in session.get_inputs())
        outputs = [o.name for o in session.get_outputs()]
        wanted = spec.output_names
        self.output_names = wanted if all(n in outputs for n in wanted) else tuple(outputs[: len(wanted)])
        if len(self.output_names) < len(wanted):
            raise InvalidModelError(f"{self.folder}: the ONNX model has outputs {outputs}, but a {spec.task} model "
                                    f"needs {list(wanted)}. Re-export it with Pocket NLP.")

    def __repr__(self) -> str:
        return f"Runner({self.folder}, {self.spec.architecture}, inputs={self.input_names})"

    @classmethod
    def load(cls, folder: Path, *, onnx_name: str = "model.onnx", threads: int | None = None) -> Runner:
        """A runner for a folder holding `onnx_name`, config.json and the tokenizer files."""
        folder = Path(folder)
        onnx_path = folder / onnx_name
        if not onnx_path.is_file():
            raise InvalidModelError(f"{folder} has no {onnx_name}. Convert the model first "
                                    "(python -m app export MODEL --out FOLDER).")
        if threads is not None and threads < 1:
            raise ValueError(f"threads: must be at least 1 (got {threads})")
        config = load_config(folder)
        spec = spec_from_config(config, where=str(folder / "config.json"))
        tokenizer = load_tokenizer(folder, spec)
        start = time.perf_counter()
        try:
            session = new_session(str(onnx_path), threads)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise InvalidModelError(f"ONNX Runtime cannot load {onnx_path} ({e}). Re-export the model.") from e
        load_ms = (time.perf_counter() - start) * 1000
        return cls(folder, spec, tokenizer, session, problem_type=config.get("problem_type"), load_ms=load_ms)

    # --- model calls -------------------------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Raw outputs by name and the wall time of the session call in ms."""
        start = time.perf_counter()
        try:
            outputs = self.session.run(list(self.output_names), feeds)
        except Exception as e:  # onnxruntime's RuntimeException and friends
            raise InvalidModelError(f"ONNX Runtime failed on {self.folder} ({e}).") from e
        ms = (time.perf_counter() - start) * 1000
        return dict(zip(self.spec.output_names, outputs)), ms

    def _require(self, task: str, hint: str) -> None:
        if self.spec.task != task:
            raise InputError(f"{self.folder.name} is a {self.spec.task} model ({self.spec.architecture}), "
                             f"not {task}. {hint}")

    # --- text classification ----------------------------------------------------------------------------

    def classify(self, texts: list[str] | str, text_pairs: list[str] | str | None = None, *,
                 top_k: int | None = None, batch_size: int = 1) -> list[ClassificationResult]:
        """Scores for each text (or text + text_pair), best label first; top_k=None keeps every label.

        One text per model call by default: dynamic INT8 takes one activation range per call, so batching
        would make a text's INT8 answer depend on the other texts in its batch (and padding wastes time).
        """
        self._require("text-classification", "Use --question/--context for question answering.")
        texts = [texts] if isinstance(texts, str) else list(texts)
        pairs = [text_pairs] if isinstance(text_pairs, str) else (list(text_pairs) if text_pairs is not None else None)
        if pairs is not None and len(pairs) != len(texts):
            raise InputError(f"Got {len(texts)} texts but {len(pairs)} text pairs; give one pair per text.")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"Text {i + 1} is empty. Type the text to classify.")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1 (got {batch_size})")
        activation = classification.activation_for(self.spec, self.problem_type)
        results: list[ClassificationResult] = []
        for lo in range(0, len(texts), batch_size):
            chunk_pairs = pairs[lo: lo + batch_size] if pairs is not None else None
            batch, encodings = self.tokenizer.batch(texts[lo: lo + batch_size], chunk_pairs)
            outputs, ms = self.run(batch.feeds(self.input_names))
            results += classification.postprocess(
                outputs["logits"], self.spec.labels, activation=activation, top_k=top_k,
                truncated=[bool(e.overflowing) for e in encodings], latency_ms=ms / len(encodings))
        return results

    # --- question answering -----------------------------------------------------------------------------

    def answer(self, question: str, context: str, *, top_k: int = 1, max_answer_len: int = 15,
               doc_stride: int | None = None, max_seq_len: int | None = None,
               handle_impossible_answer: bool = False, align_to_words: bool = True,
               batch_size: int = 8) -> list[Answer]:
        """Best answers to `question` from `context` (any length: it is read in overlapping windows)."""
        self._require("question-answering", "Use --text for text classification.")
        options = QAOptions(top_k=top_k, max_answer_len=max_answer_len, max_seq_len=max_seq_len,
                            doc_stride=doc_stride, handle_impossible_answer=handle_impossible_answer,
                            align_to_words=align_to_words)
        seq_len, stride = options.lengths(self.tokenizer.max_length)
        windows = qa.windows(self.tokenizer, question, context, max_seq_len=seq_len, doc_stride=stride)
        width = max(len(w.ids) for w in windows)
        start_logits = np.zeros((len(windows), width), np.float32)  # (windows, seq)
        end_logits = np.zeros((len(windows), width), np.float32)  # (windows, seq)
        total_ms = 0.0
        for lo in range(0, len(windows), batch_size):
            chunk = windows[lo: lo + batch_size]
            outputs, ms = self.run(arrays_from(chunk, self.tokenizer.pad_token_id).feeds(self.input_names))
            total_ms += ms
            n = outputs["start_logits"].shape[1]
            start_logits[lo: lo + len(chunk), :n] = outputs["start_logits"]
            end_logits[lo: lo + len(chunk), :n] = outputs["end_logits"]
        return qa.postprocess(windows, start_logits, end_logits, context, cls_token_id=self.tokenizer.cls_token_id,
                              options=options, latency_ms=total_ms)
