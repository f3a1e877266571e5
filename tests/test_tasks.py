"""Classification and question answering through the ONNX Runner, checked against transformers (test-only):
text-classification pipeline scores within 1e-4, question-answering pipeline answers and spans equal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from app.core.errors import InputError, InvalidModelError
from app.core.tasks import qa
from app.core.tasks.qa import QAOptions
from app.core.tasks.runner import Runner
from conftest import shared_model
from qa_reference import qa_pipeline, reference_windows

TEXTS = ["the movie was great fun", "a terrible , boring film .", "Café naïve 東京 😀 http://www.paris.com",
         "not good but not bad either", "what a really long story " * 30]
PAIRS = [("the plot was new", "the story was old"), ("love it", "hate it"), ("a", "b"),
         ("the actor was good", "")]
QUESTION = "what is the capital of france?"
CONTEXT = ("Paris is the capital city of France, on the river. The old city is very long and the new city is "
           "short. Tokyo is the capital of Japan. A story about a film: the actor was good and the plot was bad.")


def export(folder, out):
    from app.core.export import export_model
    from app.core.hub import ModelRef, local_source

    export_model(local_source(ModelRef.parse(str(folder))), out)
    return out


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    """(family, head) → (hf_folder, onnx_folder), exported once per module."""
    root = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(family, head):
        if (family, head) not in cache:
            src = tiny_models(family, head)
            cache[family, head] = (src, export(src, root / f"{family}-{head}"))
        return cache[family, head]

    return get


def _reference(folder):
    import transformers
    from tinymodels import load_reference

    return load_reference(folder), transformers.AutoTokenizer.from_pretrained(str(folder))


def _classifier(folder):
    import transformers

    model, tok = _reference(folder)
    return transformers.pipeline("text-classification", model=model, tokenizer=tok, device="cpu")


def _assert_scores_match(ours, want):
    assert [s.label for s in ours.scores] == [w["label"] for w in want]
    np.testing.assert_allclose([s.score for s in ours.scores], [w["score"] for w in want], atol=1e-4)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra", "xlm-roberta"])
def test_classification_matches_pipeline(exported, family):
    src, onnx = exported(family, "sequence-classification")
    runner = Runner.load(onnx, threads=1)
    assert runner.input_names == runner.spec.input_names
    pipe = _classifier(src)
    texts = TEXTS[:-1]  # the pipeline does not truncate; the long text is checked separately
    got = runner.classify(texts, top_k=None, batch_size=3)
    for ours, text in zip(got, texts):
        want = pipe(text, top_k=None)
        _assert_scores_match(ours, want)
        assert ours.label == want[0]["label"] and not ours.truncated and ours.latency_ms > 0
    got = runner.classify([a for a, _ in PAIRS], [b for _, b in PAIRS], top_k=2)
    for ours, (a, b) in zip(got, PAIRS):
        want = pipe({"text": a, "text_pair": b}, top_k=2)
        _assert_scores_match(ours, want)


def test_long_text_is_truncated_and_flagged(exported):
    src, onnx = exported("bert", "sequence-classification")
    runner = Runner.load(onnx, threads=1)
    [result] = runner.classify(TEXTS[-1])
    assert result.truncated
    pipe = _classifier(src)
    want = pipe(TEXTS[-1], top_k=None, truncation=True, max_length=runner.tokenizer.max_length)
    _assert_scores_match(result, want)


def test_multi_label_uses_sigmoid(tmp_path):
    from tinymodels import make_tiny_model

    src = make_tiny_model(tmp_path / "ml", "bert", "sequence-classification", num_labels=4, multi_label=True, seed=3)
    runner = Runner.load(export(src, tmp_path / "onnx"), threads=1)
    assert runner.spec.multi_label
    got = runner.classify(TEXTS[:3], top_k=None)
    pipe = _classifier(src)
    for ours, text in zip(got, TEXTS[:3]):
        _assert_scores_match(ours, pipe(text, top_k=None))
        assert abs(sum(s.score for s in ours.scores) - 1) > 1e-3  # independent sigmoids, not a distribution
    assert len(runner.classify("fun", top_k=1)[0].scores) == 1


def test_classification_bad_input(exported):
    runner = Runner.load(exported("bert", "sequence-classification")[1], threads=1)
    with pytest.raises(InputError, match="empty"):
        runner.classify(["fine", "   "])
    with pytest.raises(InputError, match="pairs"):
        runner.classify(["a", "b"], ["c"])
    with pytest.raises(InputError, match="question"):
        runner.answer("q?", "context")


def test_runner_load_errors(tmp_path, exported):
    src, onnx = exported("bert", "sequence-classification")
    with pytest.raises(InvalidModelError, match="model.onnx"):
        Runner.load(src)
    broken = tmp_path / "broken"
    shutil.copytree(onnx, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(InvalidModelError, match="ONNX Runtime"):
        Runner.load(broken)


QA_CASES = [
    dict(),
    dict(top_k=3),
    dict(top_k=5, max_answer_len=3),
    dict(handle_impossible_answer=True, top_k=2),
    dict(align_to_words=False, top_k=2),
    dict(max_seq_len=32, doc_stride=8, top_k=3),
]


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_qa_matches_pipeline_on_long_contexts(exported, family):
    src, onnx = exported(family, "question-answering")
    runner = Runner.load(onnx, threads=1)
    model, tok = _reference(src)
    context = " ".join([CONTEXT] * 4)  # several 64-token windows
    assert len(reference_windows(tok, QUESTION, context)["input_ids"]) > 2
    for case in QA_CASES:
        for question, ctx in [(QUESTION, context), ("who?", CONTEXT), ("where is tokyo", "Tokyo, Japan.")]:
            want = qa_pipeline(model, tok, question, ctx, **case)
            got = runner.answer(question, ctx, **case)
            assert [(a.text, a.start, a.end) for a in got] == [(w["answer"], w["start"], w["end"]) for w in want], case
            np.testing.assert_allclose([a.score for a in got], [w["score"] for w in want], rtol=1e-3, atol=1e-6)
            for a in got:
                assert ctx[a.start:a.end] == a.text


def test_qa_postprocess_is_exact_on_reference_logits(tiny_models):
    """Same logits in, same answers and scores out: the post-processing itself is the pipeline's."""
    from app.core.tasks.tokenizer import load_tokenizer

    src = tiny_models("roberta", "question-answering")
    model, tok = _reference(src)
    ours = load_tokenizer(src)
    context = " ".join([CONTEXT] * 3)
    for case in QA_CASES:
        want, logits = qa_pipeline(model, tok, QUESTION, context, return_logits=True, **case)
        options = QAOptions(**case)
        seq, stride = options.lengths(ours.max_length)
        windows = qa.windows(ours, QUESTION, context, max_seq_len=seq, doc_stride=stride)
        width = max(len(w.ids) for w in windows)
        start = np.zeros((len(windows), width), np.float32)
        end = np.zeros((len(windows), width), np.float32)
        for i, (s, e) in enumerate(logits):
            start[i, :len(s)], end[i, :len(e)] = s, e
        got = qa.postprocess(windows, start, end, context, cls_token_id=ours.cls_token_id, options=options)
        assert [(a.text, a.start, a.end, a.score) for a in got] == \
               [(w["answer"], w["start"], w["end"], w["score"]) for w in want], case


def test_qa_bad_input(exported):
    runner = Runner.load(exported("bert", "question-answering")[1], threads=1)
    with pytest.raises(InputError, match="question is empty"):
        runner.answer("  ", CONTEXT)
    with pytest.raises(InputError, match="context is empty"):
        runner.answer("who?", "")
    with pytest.raises(InputError, match="Shorten the question"):
        runner.answer(" ".join(["what"] * 200), CONTEXT)
    with pytest.raises(InputError, match="doc_stride"):
        runner.answer("who?", CONTEXT, doc_stride=64)
    with pytest.raises(ValueError, match="top_k"):
        runner.answer("who?", CONTEXT, top_k=0)
    with pytest.raises(InputError, match="not text-classification"):
        runner.classify("hello")
    answers = runner.answer("who?", "Paris.", handle_impossible_answer=True, top_k=5)
    assert any(a.is_impossible for a in answers) and len(answers) <= 5


def test_real_minilm_sst2_matches_pipeline(tmp_path):
    src = shared_model("minilm-sst2")
    runner = Runner.load(export(src, tmp_path / "sst2"), threads=2)
    pipe = _classifier(src)
    texts = ["a gripping , beautifully acted film", "the plot is a mess and the jokes fall flat",
             "Not bad at all, honestly.", "It's fine."]
    for ours, text in zip(runner.classify(texts, top_k=None), texts):
        _assert_scores_match(ours, pipe(text, top_k=None))


def test_real_minilm_squad_matches_pipeline(tmp_path):
    from conftest import shared_data

    src = shared_model("minilm-squad")
    data = json.loads(shared_data("squad_v1.1_dev_b1.json").read_text(encoding="utf-8"))
    runner = Runner.load(export(src, tmp_path / "squad"), threads=2)
    model, tok = _reference(src)
    paragraphs = data["data"][0]["paragraphs"]
    long_context = " ".join(p["context"] for p in paragraphs[:4])  # beyond one 384-token window
    cases = [(qa_["question"], p["context"]) for p in paragraphs[:2] for qa_ in p["qas"][:2]]
    cases += [(paragraphs[3]["qas"][0]["question"], long_context)]
    assert len(reference_windows(tok, cases[-1][0], long_context)["input_ids"]) > 1
    for question, context in cases:
        want = qa_pipeline(model, tok, question, context, top_k=2)
        got = runner.answer(question, context, top_k=2)
        assert [(a.text, a.start, a.end) for a in got] == [(w["answer"], w["start"], w["end"]) for w in want]
