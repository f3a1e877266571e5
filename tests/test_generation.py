"""The text-generation task: greedy tokens equal transformers' `generate`, seeded sampling, EOS, the KV cache reused
step by step, the CLI's --json, eval on a .txt file, the guard on a decoder, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data, shared_model
from test_gpt2 import make_tiny_gpt2

from app.core import cpu
from app.core.errors import InputError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source
from app.core.tasks import generation
from app.core.tasks.generation import GenerationOptions, generate
from app.core.tasks.runner import Runner

PROMPT = "the movie was good and the story"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny GPT-2 whose next-token margins are clear (large weights), exported fused as `convert` does."""
    root = tmp_path_factory.mktemp("lm")
    folder = make_tiny_gpt2(root / "hf", "lm", perturb=0.5, positions=96)
    export_model(local_source(ModelRef.parse(str(folder))), root / "fp32", ExportConfig(fused=True))
    return folder, root / "fp32"


def reference_greedy(folder: Path, prompt: str, new_tokens: int) -> list[int]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                             pad_token_id=model.config.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_equals_transformers_generate(tiny_lm):
    folder, fp32 = tiny_lm
    runner = Runner.load(fp32)
    for prompt in (PROMPT, "what", "paris is the capital of france and"):
        ours = generate(runner, prompt, GenerationOptions(max_new_tokens=30))
        ref = reference_greedy(folder, prompt, 30)
        assert list(ours.token_ids) == ref
        assert len(ref) >= 24 or ref[-1] == 0  # 24+ tokens unless the reference stopped at EOS too


def test_greedy_equals_generate_on_tinygpt2(tmp_path):
    folder = shared_model("tinygpt2-en")
    export_model(local_source(ModelRef.parse(str(folder))), tmp_path / "fp32", ExportConfig(fused=True))
    runner = Runner.load(tmp_path / "fp32")
    for prompt in ("The city council approved", "In 1998, the company"):
        ours = generate(runner, prompt, GenerationOptions(max_new_tokens=32))
        assert list(ours.token_ids) == reference_greedy(folder, prompt, 32)
        assert len(ours.token_ids) >= 24 and ours.text


def test_sampling_is_reproducible_with_a_seed(tiny_lm):
    runner = Runner.load(tiny_lm[1])
    options = GenerationOptions(max_new_tokens=20, temperature=1.5, top_k=40, top_p=0.95, seed=7)
    a, b = generate(runner, PROMPT, options), generate(runner, PROMPT, options)
    assert a.token_ids == b.token_ids
    others = {generate(runner, PROMPT, GenerationOptions(max_new_tokens=20, temperature=1.5, seed=s)).token_ids
              for s in range(5)}
    assert len(others) > 1  # the seed matters
    # top-k 1 is greedy whatever the temperature
    greedy = generate(runner, PROMPT, GenerationOptions(max_new_tokens=10))
    assert generate(runner, PROMPT, GenerationOptions(max_new_tokens=10, top_k=1, temperature=2.0)).token_ids \
        == greedy.token_ids


def test_pick_filters_like_transformers():
    rng = np.random.default_rng(0)
    logits = np.array([3.0, 2.9, 0.0, -1.0, -5.0])
    picks = {generation.pick(logits, GenerationOptions(top_k=2, temperature=1.0), rng) for _ in range(200)}
    assert picks == {0, 1}
    # top-p 0.5: token 0 alone holds ~50.9% of the mass, so only it survives
    assert {generation.pick(logits, GenerationOptions(top_p=0.5), rng) for _ in range(100)} == {0}


def test_stops_at_eos(tiny_lm, monkeypatch):
    runner = Runner.load(tiny_lm[1])
    full = generate(runner, PROMPT, GenerationOptions(max_new_tokens=12)).token_ids
    stop = full[4]
    monkeypatch.setattr(generation, "eos_id", lambda r: stop)
    out = generate(runner, PROMPT, GenerationOptions(max_new_tokens=12))
    assert out.stopped == "eos" and out.token_ids == full[: full.index(stop) + 1]
    # a tokenizer without an EOS token: it generates up to max_new_tokens
    monkeypatch.setattr(generation, "eos_id", lambda r: None)
    out = generate(runner, PROMPT, GenerationOptions(max_new_tokens=12))
    assert out.stopped == "max_new_tokens" and len(out.token_ids) == 12


class RecordingSession:
    def __init__(self, session):
        self.session, self.calls = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        self.calls.append({k: v.shape for k, v in feeds.items()})
        return self.session.run(names, feeds)


def test_kv_cache_is_reused_between_steps(tiny_lm):
    runner = Runner.load(tiny_lm[1])
    runner.session = RecordingSession(runner.session)
    streamed = []
    out = generate(runner, PROMPT, GenerationOptions(max_new_tokens=6),
                   on_token=lambda i, t, text: streamed.append((i, t, text)))
    calls = runner.session.calls
    n = out.prompt_tokens
    assert len(calls) == len(out.token_ids) == 6
    assert calls[0]["input_ids"] == (1, n) and calls[0]["past_key_values.0.key"][2] == 0
    for step, call in enumerate(calls[1:], start=1):
        assert call["input_ids"] == (1, 1)  # one new token, never the prompt again
        assert call["past_key_values.0.key"][2] == n + step - 1
        assert call["attention_mask"] == (1, n + step)
    assert [t for _, t, _ in streamed] == list(out.token_ids) and streamed[-1][2] == out.text


def test_bad_input(tiny_lm):
    runner = Runner.load(tiny_lm[1])
    with pytest.raises(InputError, match="empty"):
        generate(runner, "   ")
    for bad in (dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=0)):
        with pytest.raises(InputError):
            GenerationOptions(**bad)
    # a prompt longer than the context (96 positions) keeps its last 95 tokens and stops when the context is full
    out = generate(runner, " ".join(["the movie"] * 60), GenerationOptions(max_new_tokens=96))
    assert out.prompt_tokens == 95 and out.prompt_truncated > 0
    assert out.stopped in ("context", "eos") and out.prompt_tokens + len(out.token_ids) <= 96


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny GPT-2 with ordinary weights through `convert` (the guard on its built-in calibration texts)."""
    from app.core.store import convert

    root = tmp_path_factory.mktemp("store")
    folder = make_tiny_gpt2(root / "hf", "lm", positions=96, seed=3)
    return convert(str(folder), root=root), root


def test_guard_keeps_int8_for_a_decoder(converted):
    import onnx

    entry, _ = converted
    q = entry.manifest["quantization"]
    assert entry.int8_dir is not None and q["passed"], q["explanation"]
    int8 = onnx.load(entry.int8_dir / "model.onnx")
    ops = {n.op_type for n in int8.graph.node}
    assert "DynamicQuantizeMatMul" in ops
    # the tied LM head reads the int8 embedding table: one table in the file, no FP32 copy
    tables = [i for i in int8.graph.initializer if list(i.dims) == [300, 32]]
    assert [t.name for t in tables] == ["transformer.wte.weight.int8"] and tables[0].data_type == onnx.TensorProto.INT8
    if entry.manifest["quantization"]["chosen"]["config"]["weight_type"] == "uint8":  # a CPU without VNNI
        # the head's u8×s8 products must not saturate there either: the tied table keeps within 7 bits
        assert np.abs(onnx.numpy_helper.to_array(tables[0])).max() <= 63


def test_cli_predict_json(converted, capsys, monkeypatch):
    from app.cli import main

    entry, root = converted
    monkeypatch.setenv("POCKET_NLP_HOME", str(root))
    assert main(["predict", str(entry.path), "--prompt", PROMPT, "--max-new-tokens", "8", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "text-generation"
    for name in ("fp32", "int8"):
        assert {"text", "token_ids", "ttft_ms", "tokens_per_s"} <= out[name].keys()
        assert 1 <= len(out[name]["token_ids"]) <= 8
    with pytest.raises(SystemExit) as usage:  # an out-of-range number is a usage error (argparse: exit 2)
        main(["predict", str(entry.path), "--prompt", PROMPT, "--max-new-tokens", "0", "-q"])
    assert usage.value.code == 2
    assert "must be between 1 and" in capsys.readouterr().err
    assert main(["predict", str(entry.path), "--prompt", "", "-q"]) == 1


def test_eval_on_a_text_file(converted, tmp_path, capsys, monkeypatch):
    from app.cli import main

    entry, root = converted
    monkeypatch.setenv("POCKET_NLP_HOME", str(root))
    text = tmp_path / "held_out.txt"
    text.write_text("\n".join(["the movie was good and the story was very fun ."] * 3
                              + ["paris is the capital of france , and the river is long ."] * 3) + "\n")
    assert main(["eval", str(entry.path), "--data", str(text), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "text-generation" and result["examples"] > 20
    assert result["fp32"]["metrics"]["perplexity"] > 1 and result["int8"]["metrics"]["perplexity"] > 1
    assert 0.5 <= result["agreement"] <= 1 and result["greedy_continuation"]["prompts"] >= 1
    bad = tmp_path / "data.tsv"
    bad.write_text("text\tlabel\nhello\t1\n")
    assert main(["eval", str(entry.path), "--data", str(bad), "-q"]) == 1
    assert ".txt" in capsys.readouterr().err


def test_strided_windows_score_every_token_once():
    for n, window, stride in ((10, 4, 2), (257, 128, 64), (5, 8, 4), (2, 4, 2)):
        spans = generation.strided_windows(n, window, stride)
        scored = [t for begin, end, first in spans for t in range(first, end)]
        assert scored == list(range(1, n)) and all(end - begin <= window for begin, end, _ in spans)


def test_tinygpt2_int8_perplexity_and_agreement(tmp_path):
    """Held-out English: INT8 perplexity within 0.5% of FP32, >= 98% of next tokens the same (as the issue asks).

    Where u8×s8 products saturate (x86 without VNNI) no INT8 setting reaches that, and the guard keeps FP32."""
    from app.core.eval import load_squad
    from app.core.store import convert

    folder = shared_model("tinygpt2-en")
    squad = load_squad(shared_data("squad_v1.1_dev_b1.json"))
    contexts = list(dict.fromkeys(e.context for e in squad.examples))[:40]
    text = tmp_path / "squad_paragraphs.txt"
    text.write_text("\n".join(contexts) + "\n", encoding="utf-8")
    entry = convert(str(folder), root=tmp_path / "store")
    if entry.int8_dir is None:  # x86 without VNNI: 97.9% of next tokens at best there, and the guard says no
        assert cpu.u8s8_saturates(), entry.summary()
        return
    fp32, int8 = Runner.load(entry.fp32_dir), Runner.load(entry.int8_dir)
    result = generation.evaluate_generation(fp32, int8, generation.load_text(text), window=128)
    assert result.details["perplexity_ratio"] < 1.005
    assert result.agreement >= 0.98


# --- the GUI's Try-it view --------------------------------------------------------------------------------------

@pytest.fixture
def window(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow
    from app.gui.widgets import apply_theme
    from app.gui.worker import stop_all

    apply_theme(QApplication.instance(), "light")
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    stop_all()


def test_try_it_streams_both_continuations_and_cancel_stops_both(window, qtbot, converted):
    entry, _ = converted
    page = window.try_it
    page.set_entry(entry)
    view = page.generation_view
    assert page.modes.currentWidget() is view
    view.prompt_edit.setPlainText(PROMPT)
    view.max_tokens.setValue(12)
    streamed = []
    original = view.stream
    view.stream = lambda p: (streamed.append(p.stage), original(p))
    view.run()
    qtbot.waitUntil(lambda: view.run_button.isEnabled(), timeout=20000)
    assert {"fp32", "int8"} <= set(streamed)  # both grew token by token
    for key in ("fp32", "int8"):
        assert "tokens/s" in view.meta[key].text() and "first token" in view.meta[key].text()
        assert view.views[key].toPlainText().startswith(PROMPT)
    assert "same continuation" in view.status.text() or "departs" in view.status.text()
    # Cancel: the running model stops after its current token and the other one does not start
    view.max_tokens.setValue(90)
    view.run()
    view.cancel()
    qtbot.waitUntil(lambda: view.run_button.isEnabled(), timeout=20000)
    assert "cancelled" in view.meta["fp32"].text() or "Cancelled" in view.views["fp32"].toPlainText()
    assert "Cancelled" in view.views["int8"].toPlainText()


def test_continuation_html_marks_where_int8_departs():
    from app.gui.generation_view import continuation_html

    out = continuation_html("Hi", " there you go", " there")
    assert "underline" in out and out.index("there") < out.index("you go")
    assert "underline" not in continuation_html("Hi", " there", None)
