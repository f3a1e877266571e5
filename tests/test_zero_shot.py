"""Zero-shot classification on tiny random NLI models: the same labels and scores as transformers'
zero-shot pipeline (single- and multi-label, every entailment layout), plain NLI pairs through classification,
the CLI (predict, eval), bad input, and the Try-it view."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from test_deberta import make_tiny_deberta

from app.core.errors import InputError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source
from app.core.tasks import modes_of
from app.core.tasks.runner import Runner
from app.core.tasks.zero_shot import MAX_LABELS, classify, hypotheses, parse_labels

TOL = 1e-5
TEXTS = ("the movie was a great story with very good acting", "what a boring , bad film ! i hate it")
LABELS = ["fun", "boring", "love", "time of the year"]
LAYOUTS = {  # id2label of real NLI models
    "entail_first": ("entailment", "neutral", "contradiction"),  # MoritzLaurer/DeBERTa-v3-*-mnli-fever-anli
    "entail_middle": ("contradiction", "entailment", "neutral"),  # cross-encoder/nli-deberta-v3-*
    "binary": ("entailment", "not_entailment"),  # *-zeroshot-v2.0
}


@pytest.fixture(scope="module")
def nli_models(tmp_path_factory):
    """layout → (HF folder, exported FP32 folder), built once."""
    root = tmp_path_factory.mktemp("nli")
    built = {}

    def get(layout: str):
        if layout not in built:
            folder = make_tiny_deberta(root / layout, "sequence-classification", labels=LAYOUTS[layout],
                                       seed=len(built))
            export_model(local_source(ModelRef.parse(str(folder))), root / f"{layout}-onnx", ExportConfig())
            built[layout] = folder, root / f"{layout}-onnx"
        return built[layout]

    return get


def reference_pipeline(folder):
    import transformers
    from tinymodels import load_reference

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return transformers.pipeline("zero-shot-classification", model=load_reference(folder), tokenizer=tok,
                                 device="cpu")


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_scores_equal_the_pipeline(nli_models, layout, multi_label):
    folder, onnx_dir = nli_models(layout)
    runner, pipe = Runner.load(onnx_dir), reference_pipeline(folder)
    long_text = " ".join(["the story of a very long year in paris"] * 12)  # cut by only_first truncation
    for text in (*TEXTS, long_text):
        for labels, template in ((LABELS, "This example is {}."), (["fun"], "It is about {}"),
                                 (LABELS[:2], "{} !")):
            ours = classify(runner, text, labels, template=template, multi_label=multi_label)
            ref = pipe(text, candidate_labels=labels, hypothesis_template=template, multi_label=multi_label)
            assert [s.label for s in ours.scores] == ref["labels"]
            assert np.allclose([s.score for s in ours.scores], ref["scores"], atol=TOL, rtol=0)
            assert ours.truncated or text is not long_text


def test_labels_templates_and_limits():
    assert parse_labels(" sports, politics,,  science ,") == ("sports", "politics", "science")
    assert parse_labels(["a ", " b"]) == ("a", "b")
    assert hypotheses(["x"], "Topic: {}.") == ["Topic: x."]
    for labels, template, words in (([], "{}", "at least one"), (["a", "a"], "{}", "twice"),
                                    (["a"], "no slot", "has no {}"), (["a"], "{name}", "cannot be filled"),
                                    ([f"l{i}" for i in range(MAX_LABELS + 1)], "{}", f"at most {MAX_LABELS}")):
        with pytest.raises(InputError, match=words):
            hypotheses(labels, template)


def test_zero_shot_is_offered_for_nli_classifiers_only():
    assert modes_of("text-classification", LAYOUTS["entail_first"]) == ["text-classification",
                                                                         "zero-shot-classification"]
    assert modes_of("text-classification", ("NEGATIVE", "POSITIVE")) == ["text-classification"]
    assert modes_of("question-answering", ()) == ["question-answering"]


def test_not_an_nli_model_is_refused(tmp_path):
    folder = make_tiny_deberta(tmp_path / "m", "sequence-classification")  # NEGATIVE / POSITIVE / NEUTRAL
    export_model(local_source(ModelRef.parse(str(folder))), tmp_path / "onnx", ExportConfig())
    with pytest.raises(InputError, match="no 'entailment' label"):
        classify(Runner.load(tmp_path / "onnx"), "a text", ["a", "b"])


def test_plain_nli_pairs_through_classification(nli_models):
    import torch
    import transformers
    from tinymodels import load_reference

    folder, onnx_dir = nli_models("entail_middle")
    premise, hypothesis = TEXTS[0], "This example is fun."
    ours = Runner.load(onnx_dir).classify([premise], [hypothesis])[0]
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = load_reference(folder)(**tok([premise], [hypothesis], return_tensors="pt")).logits[0].numpy()
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert {s.label: s.score for s in ours.scores} == pytest.approx(
        dict(zip(LAYOUTS["entail_middle"], probs.tolist())), abs=TOL)


# --- command line -----------------------------------------------------------------------------------------------

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from app.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_predict_and_eval(nli_models, tmp_path, capsys):
    folder, _ = nli_models("entail_first")
    code, out, err = run_cli(capsys, "predict", str(folder), "--text", TEXTS[0], "--labels", "fun, boring, love",
                             "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "zero-shot-classification"
    assert sorted(result["fp32"]["labels"]) == ["boring", "fun", "love"]
    assert sum(result["fp32"]["scores"]) == pytest.approx(1.0)
    code, out, err = run_cli(capsys, "predict", str(folder), "--text", TEXTS[1], "--labels", "fun,boring",
                             "--multi-label", "--template", "It is {}.", "-q")
    assert code == 0, err
    assert "FP32" in out and "INT8" in out and ("agree" in out or "DISAGREE" in out)
    data = tmp_path / "topics.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in
                                                  zip(TEXTS * 3, ["fun", "Boring"] * 3)), encoding="utf-8")
    code, out, err = run_cli(capsys, "eval", str(folder), "--data", str(data), "--labels", "fun,boring", "--json",
                             "-q")
    assert code == 0, err
    report = json.loads(out)
    assert report["task"] == "zero-shot-classification" and report["examples"] == 6
    assert report["candidate_labels"] == ["fun", "boring"] and 0 <= report["fp32"]["metrics"]["accuracy"] <= 1


def test_cli_bad_input_is_a_clear_error(nli_models, tmp_path, capsys):
    folder, _ = nli_models("entail_first")
    code, _, err = run_cli(capsys, "predict", str(folder), "--text", "x", "--labels", " , ", "-q")
    assert code == 1 and "at least one candidate label" in err
    many = ",".join(f"label {i}" for i in range(500))
    code, _, err = run_cli(capsys, "predict", str(folder), "--text", "x", "--labels", many, "-q")
    assert code == 1 and f"at most {MAX_LABELS}" in err
    data = tmp_path / "bad.tsv"
    data.write_text("sentence\tlabel\nsome text\tweather\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "eval", str(folder), "--data", str(data), "--labels", "fun,boring", "-q")
    assert code == 1 and "line 2" in err and "'weather' is not one of the candidate labels" in err
    plain = make_tiny_deberta(tmp_path / "sentiment", "sequence-classification")
    code, _, err = run_cli(capsys, "predict", str(plain), "--text", "x", "--labels", "a,b", "-q")
    assert code == 1 and "no 'entailment' label" in err and "Traceback" not in err


# --- the Try-it view ------------------------------------------------------------------------------------------

def test_try_it_view_ranks_both_models(nli_models, qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.core.store import ConvertConfig, convert
    from app.gui.main_window import MainWindow
    from app.gui.widgets import apply_theme
    from app.gui.worker import stop_all

    apply_theme(QApplication.instance(), "light")
    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    try:
        page = window.try_it
        sentiment = SimpleNamespace(path="/x/s", name="s", revision=None, task="text-classification",
                                    int8_dir="/y", manifest={"spec": {"labels": ["NEGATIVE", "POSITIVE"]}})
        page.set_entry(sentiment)
        assert page.modes.currentIndex() == page.view_index["classification"]

        entry = convert(str(nli_models("entail_first")[0]), ConvertConfig())
        page.set_entry(entry)
        view = page.zero_shot_view
        assert page.modes.currentIndex() == page.view_index["zero-shot"]
        view.text_edit.setPlainText(TEXTS[0])
        view.labels_edit.setText("fun, boring, love")
        view.run_button.click()
        qtbot.waitUntil(lambda: view.tables["int8"].rowCount() == 3, timeout=20000)
        assert view.tables["fp32"].rowCount() == 3
        assert {view.tables["fp32"].item(r, 2).text() for r in range(3)} == {"fun", "boring", "love"}
        assert "ms" in view.status.text()
        view.labels_edit.setText(" , ")
        view.run()
        assert "at least one label" in view.status.text()
        view.pairs_button.click()  # plain NLI pairs: the classification view, the model's own labels
        assert page.modes.currentIndex() == page.view_index["classification"]
    finally:
        stop_all()


def test_roberta_nli_scores_equal_the_pipeline(tmp_path):
    """The task is not DeBERTa's: a RoBERTa NLI model (byte-level BPE, <s> A </s></s> B </s>) scores the same too."""
    from tinymodels import make_tiny_model

    labels = {0: "contradiction", 1: "neutral", 2: "entailment"}  # roberta-large-mnli's order
    folder = make_tiny_model(tmp_path / "roberta-nli", "roberta", "sequence-classification", id2label=labels,
                             label2id={v: k for k, v in labels.items()})
    export_model(local_source(ModelRef.parse(str(folder))), tmp_path / "onnx", ExportConfig(fused=True))
    runner, pipe = Runner.load(tmp_path / "onnx"), reference_pipeline(folder)
    for multi_label in (False, True):
        for text in TEXTS:
            ours = classify(runner, text, LABELS, multi_label=multi_label)
            ref = pipe(text, candidate_labels=LABELS, multi_label=multi_label)
            assert [s.label for s in ours.scores] == ref["labels"]
            assert np.allclose([s.score for s in ours.scores], ref["scores"], atol=TOL, rtol=0)
