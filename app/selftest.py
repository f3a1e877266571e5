"""`PocketNLP --self-test` (or `python -m app --self-test`): prove an install works, offline and headless.

It builds two tiny BERT models itself (random numpy weights saved with safetensors, a WordPiece tokenizer
built with `tokenizers`; no PyTorch, no transformers, no network), converts each into a temporary store
through the same `convert` the app uses (export → fused FP32 → guarded INT8), runs one classification and
one question through FP32 and INT8, checks the results are well-formed, then opens the main window on Qt's
offscreen platform and closes it. It prints the figures and exits 0, or prints what failed and exits 1.

Its first purpose is the packaged app (packaging/): a bundle that misses a library, a Qt plugin or a data
file fails here rather than on a user's desktop.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

# A small English vocabulary, plus single characters and ## continuations so any lowercase word tokenizes.
_WORDS = ("the a an is was be it this that i we you he she they my our good bad great terrible film movie story "
          "plot acting love loved hate fun boring what who where when why how paris france capital city river "
          "long short time year day new old and or but not very really so too of in on at to for with from by "
          "about as into like service food price team won lost weather week").split()
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LABELS = ["NEGATIVE", "POSITIVE"]
DIMS = dict(hidden=32, layers=2, heads=4, intermediate=64, max_positions=128)


def _vocab() -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    words = list(dict.fromkeys(_WORDS))
    return _SPECIALS + words + list(letters) + ["##" + c for c in letters] + list(".,!?'\"-():;")


def _write_tokenizer(folder: Path, vocab: list[str]) -> None:
    """A BERT WordPiece tokenizer.json (lowercasing, [CLS] A [SEP] B [SEP]), as transformers would save it."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": DIMS["max_positions"],
         "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
         "mask_token": "[MASK]"}, indent=2), encoding="utf-8")


def build_tiny_bert(folder: Path, head: str, *, seed: int = 0) -> Path:
    """Write a tiny BertForSequenceClassification ("classification") or BertForQuestionAnswering ("qa")
    checkpoint in Hugging Face layout (config.json, model.safetensors, tokenizer files) to `folder`."""
    from safetensors.numpy import save_file

    if head not in ("classification", "qa"):
        raise ValueError(f"head: {head!r} is not 'classification' or 'qa'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    h, ff, n_pos = DIMS["hidden"], DIMS["intermediate"], DIMS["max_positions"]
    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def linear(name: str, d_in: int, d_out: int) -> None:  # torch Linear layout: weight [out, in]
        tensors[name + ".weight"] = normal(d_out, d_in, std=1.0 / np.sqrt(d_in))
        tensors[name + ".bias"] = normal(d_out, std=0.02)

    def layer_norm(name: str, dim: int) -> None:
        tensors[name + ".weight"] = (1.0 + normal(dim, std=0.1)).astype(np.float32)
        tensors[name + ".bias"] = normal(dim, std=0.05)

    tensors: dict[str, np.ndarray] = {
        "bert.embeddings.word_embeddings.weight": normal(len(vocab), h, std=0.5),
        "bert.embeddings.position_embeddings.weight": normal(n_pos, h, std=0.1),
        "bert.embeddings.token_type_embeddings.weight": normal(2, h, std=0.1),
    }
    layer_norm("bert.embeddings.LayerNorm", h)
    for i in range(DIMS["layers"]):
        p = f"bert.encoder.layer.{i}."
        for name in ("query", "key", "value"):
            linear(p + "attention.self." + name, h, h)
        linear(p + "attention.output.dense", h, h)
        layer_norm(p + "attention.output.LayerNorm", h)
        linear(p + "intermediate.dense", h, ff)
        linear(p + "output.dense", ff, h)
        layer_norm(p + "output.LayerNorm", h)
    if head == "classification":
        linear("bert.pooler.dense", h, h)
        linear("classifier", h, len(_LABELS))
        architecture, labels = "BertForSequenceClassification", _LABELS
    else:
        linear("qa_outputs", h, 2)
        architecture, labels = "BertForQuestionAnswering", ["LABEL_0", "LABEL_1"]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": "bert", "architectures": [architecture], "vocab_size": len(vocab), "hidden_size": h,
        "num_hidden_layers": DIMS["layers"], "num_attention_heads": DIMS["heads"], "intermediate_size": ff,
        "hidden_act": "gelu", "max_position_embeddings": n_pos, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "pad_token_id": 0, "id2label": {str(i): v for i, v in enumerate(labels)},
        "label2id": {v: i for i, v in enumerate(labels)},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _write_tokenizer(folder, vocab)
    return folder


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def _convert_both(source: Path, store: Path, say):
    """Convert with the accuracy guard; when the guard keeps a random model in FP32, force INT8 so both run."""
    from app.core.quantize import QuantizeConfig
    from app.core.store import ConvertConfig, convert

    start = time.perf_counter()
    entry = convert(str(source), ConvertConfig(), root=store)
    how = "accuracy guard passed"
    if entry.int8_dir is None:
        entry = convert(str(source), ConvertConfig(force=QuantizeConfig()), root=store)
        how = "guard kept FP32 for random weights; INT8 forced"
    if entry.int8_dir is None:
        raise RuntimeError(f"{source.name}: no INT8 model even with forced settings: {entry.summary()}")
    seconds = time.perf_counter() - start
    say(f"  converted in {seconds:.1f} s ({how}); model.onnx FP32 {_mb(entry.fp32_dir / 'model.onnx')}, "
        f"INT8 {_mb(entry.int8_dir / 'model.onnx')}")
    return entry


def _core_checks(tmp: Path, say) -> None:
    from app.core.tasks.runner import Runner

    store = tmp / "store"
    say("classification: tiny BertForSequenceClassification (random weights, built without PyTorch)")
    entry = _convert_both(build_tiny_bert(tmp / "tiny-bert-cls", "classification", seed=1), store, say)
    text = "What a great film, I loved the story."
    labels = {}
    for name, folder in (("FP32", entry.fp32_dir), ("INT8", entry.int8_dir)):
        runner = Runner.load(folder, threads=1)
        runner.classify([text])  # warm-up: the first call pays for allocations
        [result] = runner.classify([text])
        if result.label not in _LABELS or not 0.0 <= result.score <= 1.0:
            raise RuntimeError(f"{name} classification gave a malformed result: {result}")
        labels[name] = result.label
        say(f"  {name}: {result.label} ({result.score:.4f}), {result.latency_ms:.2f} ms, load {runner.load_ms:.0f} ms")
    say(f"  FP32 and INT8 {'agree' if labels['FP32'] == labels['INT8'] else 'differ (random weights)'}")

    say("question answering: tiny BertForQuestionAnswering (random weights)")
    entry = _convert_both(build_tiny_bert(tmp / "tiny-bert-qa", "qa", seed=2), store, say)
    question, context = "What is the capital of France?", "Paris is the capital city of France, on the river."
    answers = {}
    for name, folder in (("FP32", entry.fp32_dir), ("INT8", entry.int8_dir)):
        runner = Runner.load(folder, threads=1)
        runner.answer(question, context)
        [best] = runner.answer(question, context)
        if context[best.start:best.end] != best.text:
            raise RuntimeError(f"{name} answer {best.text!r} is not context[{best.start}:{best.end}]")
        answers[name] = best.text
        say(f"  {name}: {best.text!r} [{best.start}:{best.end}] score {best.score:.4f}, {best.latency_ms:.2f} ms")
    say(f"  FP32 and INT8 {'agree' if answers['FP32'] == answers['INT8'] else 'differ (random weights)'}")

    # Downloads are not tried (offline), but the lazily loaded Hub modules a download needs must be present.
    import huggingface_hub
    from huggingface_hub import HfApi, errors, hf_hub_download, scan_cache_dir  # noqa: F401

    try:  # fast downloads of Xet-stored files; without it huggingface_hub falls back to plain HTTP
        import hf_xet  # noqa: F401
        xet = "hf_xet loads"
    except ModuleNotFoundError:
        xet = "no hf_xet"
    say(f"hub: huggingface_hub {huggingface_hub.__version__} loads, {xet} (downloads not tried: offline)")


def _gui_check(tmp: Path, say) -> None:
    """Open the main window on the offscreen platform (unless a platform is set) and close it again."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    start = time.perf_counter()
    from PySide6.QtCore import QSettings, QTimer

    from app.gui import RESOURCES, create_app
    from app.gui.main_window import MainWindow

    icons = sorted(RESOURCES.glob("icon-*.png"))
    if not icons:
        raise RuntimeError(f"no icon PNGs in {RESOURCES}: the resources/ folder is missing from this install")
    app = create_app([sys.argv[0]])
    if app.windowIcon().isNull():
        raise RuntimeError(f"the window icon did not load from {RESOURCES}")
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings)
    window.show()
    shown = {}
    QTimer.singleShot(0, lambda: shown.setdefault("ms", (time.perf_counter() - start) * 1000))
    QTimer.singleShot(300, window.close)
    QTimer.singleShot(400, app.quit)
    app.exec()
    if "ms" not in shown:
        raise RuntimeError("the main window never reached the event loop")
    say(f"gui: main window shown on Qt platform '{app.platformName()}' in {shown['ms']:.0f} ms, "
        f"{len(icons)} icon sizes from {RESOURCES}")


def main(argv: list[str] | None = None) -> int:
    """Run the self-test; `--no-gui` skips the window check. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    gui = "--no-gui" not in argv
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    import onnxruntime
    import PySide6
    import tokenizers

    from app import __version__

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")  # no ORT advice
    frozen = "checkout"
    if getattr(sys, "frozen", False):
        stamp = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "build_info.json"
        info = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else {}
        frozen = (f"bundle built {info.get('built_at', '?')} from {info.get('commit') or '?'}"
                  f"{' (dirty)' if info.get('dirty') else ''} for {info.get('platform', '?')}")
    say(f"Pocket NLP {__version__} self-test ({frozen}; Python {sys.version.split()[0]}, onnxruntime "
        f"{onnxruntime.__version__}, tokenizers {tokenizers.__version__}, PySide6 {PySide6.__version__})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pocket-selftest-") as tmp_name:
        tmp = Path(tmp_name)
        saved = {k: os.environ.get(k) for k in ("POCKET_NLP_HOME", "HF_HUB_OFFLINE", "HF_HOME")}
        # Offline and isolated: nothing is read from or written to the user's store or Hugging Face cache.
        os.environ.update(POCKET_NLP_HOME=str(tmp / "store"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"))
        try:
            _core_checks(tmp, say)
            if gui:
                _gui_check(tmp, say)
        except Exception as e:  # noqa: BLE001 - the self-test reports every failure the same way
            traceback.print_exc(file=sys.stderr)
            say(f"SELF-TEST FAILED: {type(e).__name__}: {e}")
            return 1
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    say(f"SELF-TEST PASSED in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
