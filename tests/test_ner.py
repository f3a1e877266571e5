"""Token classification (NER) through the ONNX Runner, checked against transformers' token-classification
pipeline (test-only): every family and aggregation strategy, long texts in strided windows; the guard's
entity agreement; CoNLL / JSONL loading errors; entity metrics against seqeval; evaluate_ner."""

from __future__ import annotations

import bisect
import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from app.core.errors import CancelledError, InputError, UnsupportedModelError
from app.core.tasks import ner
from app.core.tasks.runner import Runner
from conftest import shared_data, shared_model
from tinymodels import FAMILIES

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TEXTS = ["the movie was great fun in Paris", "Café naïve résumé 東京 😀 € http://www.paris.com!",
         "Who? (Paris) - the capital: France; 'old' city...", "a  b\tgood   day"]
LONG = "what a really long story about paris and france, the actor was good " * 6  # ~100 tokens > 64
STRIDE = 7


def export(folder, out):
    from app.core.export import export_model
    from app.core.hub import ModelRef, local_source

    export_model(local_source(ModelRef.parse(str(folder))), out)
    return out


@pytest.fixture(scope="module")
def ner_model(tmp_path_factory):
    """family → (runner, transformers model, transformers tokenizer) of a tiny model with BIO labels."""
    import transformers
    from tinymodels import load_reference, make_tiny_model

    cache = {}

    def get(family):
        if family not in cache:
            root = tmp_path_factory.mktemp(f"ner-{family}")
            src = make_tiny_model(root / "hf", family, "token-classification", num_labels=len(LABELS),
                                  id2label=dict(enumerate(LABELS)), label2id={v: k for k, v in enumerate(LABELS)})
            runner = Runner.load(export(src, root / "onnx"))
            cache[family] = runner, load_reference(src), transformers.AutoTokenizer.from_pretrained(str(src))
        return cache[family]

    return get


def _pipeline(model, tok, aggregation, stride=None):
    import transformers

    return transformers.pipeline("token-classification", model=model, tokenizer=tok, device="cpu",
                                 aggregation_strategy=aggregation, **({} if stride is None else {"stride": stride}))


def _assert_same(ours, want):
    key = "entity" if ours and ours[0].index is not None else "entity_group"
    got = [e.to_dict() for e in ours]
    assert [(g[key], g["word"], g["start"], g["end"], g.get("index")) for g in got] == \
           [(w[key], w["word"], w["start"], w["end"], w.get("index")) for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [float(w["score"]) for w in want], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")  # the pipeline, on BPE
@pytest.mark.parametrize("family", FAMILIES)
def test_entities_match_pipeline(ner_model, family):
    runner, model, tok = ner_model(family)
    assert len(tok(LONG)["input_ids"]) > runner.tokenizer.max_length
    found = 0
    for aggregation in ner.AGGREGATIONS:
        pipe = _pipeline(model, tok, aggregation)
        for text, ours in zip(TEXTS, ner.entities(runner, TEXTS, aggregation=aggregation)):
            _assert_same(ours, pipe(text))
            found += len(ours)
        if aggregation == "none":  # the pipeline refuses a stride with "none"
            continue
        # a text longer than the window: with our stride, and with the default one the pipeline is given
        _assert_same(ner.entities(runner, LONG, aggregation=aggregation, stride=STRIDE)[0],
                     _pipeline(model, tok, aggregation, STRIDE)(LONG))
        default = ner.default_stride(runner.tokenizer.max_length)
        _assert_same(ner.entities(runner, LONG, aggregation=aggregation)[0],
                     _pipeline(model, tok, aggregation, default)(LONG))
    assert found > 20  # random tiny models tag plenty of tokens


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_none_over_windows_keeps_each_token_once(ner_model, family):
    runner, _, _ = ner_model(family)
    parts = ner.windows(runner.tokenizer, LONG, stride=STRIDE)
    assert len(parts) > 1 and all(len(w.ids) <= runner.tokenizer.max_length for w in parts)
    logits = np.zeros((len(parts), max(len(w.ids) for w in parts), len(LABELS)), np.float32)  # (windows, seq, labels)
    for k, w in enumerate(parts):
        logits[k, :len(w.ids)] = ner._logits(runner, w)[0]
    tokens = ner.postprocess(parts, logits, LONG, LABELS, tokenizer=runner.tokenizer, aggregation="none",
                             ignore_labels=(), stride=STRIDE)
    whole = runner.tokenizer.encode([LONG], truncation=None)[0]  # the text in one piece: true token indices
    content = [i for i, s in enumerate(whole.special_tokens_mask) if not s]
    assert [e.index for e in tokens] == content
    assert [(e.word, e.start, e.end) for e in tokens] == [(whole.tokens[i], *whole.offsets[i]) for i in content]


def test_bad_input(ner_model):
    runner, _, _ = ner_model("bert")
    with pytest.raises(InputError, match="aggregation 'best'"):
        ner.entities(runner, ["a"], aggregation="best")
    with pytest.raises(InputError, match="empty"):
        ner.entities(runner, ["  "])
    with pytest.raises(InputError, match="stride"):
        ner.entities(runner, ["a"], stride=62)
    # first/average/max need word ids, as the pipeline needs a fast tokenizer
    window = SimpleNamespace(ids=[2, 7, 3], tokens=["[CLS]", "good", "[SEP]"], offsets=[(0, 0), (0, 4), (0, 0)],
                             special_tokens_mask=[1, 0, 1], word_ids=[None, None, None])
    logits = np.zeros((1, 3, len(LABELS)), np.float32)  # (windows, seq, labels)
    assert ner.postprocess([window], logits, "good", LABELS, tokenizer=runner.tokenizer, ignore_labels=())
    with pytest.raises(UnsupportedModelError, match="word ids"):
        ner.postprocess([window], logits, "good", LABELS, tokenizer=runner.tokenizer, aggregation="first")


# --- guard ---------------------------------------------------------------------------------------------------

def test_token_spans_group_like_simple():
    names = ["O", "B-PER", "I-PER", "I-PER", "B-PER", "I-LOC", "I-LOC", "O", "I-PER", "B-LOC", "B-LOC", "LOC"]
    labels = tuple(dict.fromkeys(names))
    ids = np.array([labels.index(n) for n in names])
    mask = np.ones(len(names), bool)
    assert ner.token_spans(ids, labels, mask) == {(1, 3, "PER"), (4, 4, "PER"), (5, 6, "LOC"), (8, 8, "PER"),
                                                  (9, 9, "LOC"), (10, 11, "LOC")}
    mask[[0, 2]] = False  # masked tokens are skipped: B-PER then I-PER still one entity
    assert (1, 3, "PER") in ner.token_spans(ids, labels, mask)


def test_guard_agreement():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1, 8, len(LABELS))).astype(np.float32)  # (1, seq, labels)
    feeds = {"input_ids": np.ones((1, 8), np.int64), "attention_mask": np.array([[1] * 6 + [0] * 2])}
    ref[0, 3] = 50 * np.eye(len(LABELS))[LABELS.index("B-LOC")]
    flipped = ref.copy()
    flipped[0, 3] = 50 * np.eye(len(LABELS))[LABELS.index("O")]  # one entity fewer
    specials = ref.copy()
    specials[0, [0, 5, 6, 7]] += 100 * np.eye(len(LABELS))[1]  # CLS, SEP and padding differ: no entity there
    same, cos = ner.guard_agreement([{"logits": ref}] * 3, [{"logits": ref}, {"logits": flipped},
                                                            {"logits": specials}], [feeds] * 3, LABELS)
    assert same == [True, False, True]
    assert cos[0] == pytest.approx(1.0) and cos[1] < 0.99

    unsure = ref.copy()  # FP32 itself torn between B-LOC and O: INT8 picking O is a near-tie
    unsure[0, 3] = 0
    unsure[0, 3, [LABELS.index("B-LOC"), LABELS.index("O")]] = [5.0, 4.99]
    tipped = unsure.copy()
    tipped[0, 3, LABELS.index("O")] = 5.01
    args = [{"logits": unsure}, {"logits": ref}], [{"logits": tipped}, {"logits": flipped}], [feeds] * 2, LABELS
    assert ner.guard_agreement(*args)[0] == [False, False]
    assert ner.guard_agreement(*args, tolerance=0.05)[0] == [True, False]  # a confident flip still counts


# --- data and metrics ----------------------------------------------------------------------------------------

def test_load_conll(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\n\nJohn NNP B-PER\nSmith NNP I-PER\nlives O\n\n\n\nin O\nParis B-LOC\n",
                    encoding="utf-8")
    data = ner.load_conll(path, labels=LABELS)
    assert [(s.words, s.tags, s.line) for s in data.sentences] == [
        (("John", "Smith", "lives"), ("B-PER", "I-PER", "O"), 4), (("in", "Paris"), ("O", "B-LOC"), 10)]
    assert ner.load_conll(path).sentences == data.sentences


@pytest.mark.parametrize("content, labels, message", [
    ("John B-PER\nSmith\n", None, "a.txt, line 2: one column"),
    ("John B-PER\n\nSmith E-PER\n", None, "a.txt, line 3: tag 'E-PER' is not O, B-TYPE or I-TYPE"),
    ("John B-PER\n\n\nat O\nZürich B-CITY\n", LABELS, "a.txt, line 5: unknown tag 'B-CITY'"),
    ("\n  \n", None, "a.txt: the file is empty"),
    ("-DOCSTART- O\n\n", None, "a.txt: no sentences"),
])
def test_load_conll_errors(tmp_path, content, labels, message):
    path = tmp_path / "a.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        ner.load_conll(path, labels=labels)


def test_load_conll_bad_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"John B-PER\n\nZ\xfcrich B-LOC\n")
    with pytest.raises(InputError, match="a.txt, line 3: not valid UTF-8"):
        ner.load_conll(path)


def test_load_jsonl_with_ids(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"tokens": ["-DOCSTART-"], "ner_tags": [0]}, {"tokens": ["John", "in", "Paris"], "ner_tags": [1, 0, 3]},
            {"tokens": ["Smith"], "ner_tags": ["B-PER"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    raw = ner.load_conll(path)
    assert raw.sentences[0].tags == (1, 0, 3)  # ids stay ids until the model's labels name them
    data = raw.with_labels(LABELS)
    assert [(s.tags, s.line) for s in data.sentences] == [(("B-PER", "O", "B-LOC"), 2), (("B-PER",), 3)]
    path.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": [0, 9]}), encoding="utf-8")
    with pytest.raises(InputError, match="a.jsonl, line 1, token 2: tag id 9"):
        ner.load_conll(path, labels=LABELS)
    path.write_text('{"tokens": ["a"], "ner_tags": []}', encoding="utf-8")
    with pytest.raises(InputError, match="line 1: 1 tokens but 0 ner_tags"):
        ner.load_conll(path)
    path.write_text('{"tokens": ["a"]', encoding="utf-8")
    with pytest.raises(InputError, match="line 1, column .*malformed JSON"):
        ner.load_conll(path)


def test_entity_spans_conlleval():
    assert ner.entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "B-PER", "B-PER"]) == {
        (0, 1, "PER"), (3, 4, "LOC"), (5, 5, "LOC"), (6, 6, "PER"), (7, 7, "PER"), (8, 8, "PER")}
    assert ner.entity_spans(["O", "O"]) == set()


def test_entity_metrics_match_seqeval():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = np.random.default_rng(1)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    gold = [[tags[i] for i in rng.integers(0, len(tags), rng.integers(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else tags[rng.integers(0, len(tags))] for t in s] for s in gold]
    ours = ner.entity_metrics(gold, pred)
    assert ours["precision"] == pytest.approx(100 * seqeval.precision_score(gold, pred))
    assert ours["recall"] == pytest.approx(100 * seqeval.recall_score(gold, pred))
    assert ours["f1"] == pytest.approx(100 * seqeval.f1_score(gold, pred))
    report = seqeval.classification_report(gold, pred, output_dict=True)
    assert ours["per_type_f1"] == pytest.approx({k: 100 * report[k]["f1-score"] for k in ("LOC", "MISC", "PER")})
    assert ner.entity_metrics([["O"]], [["B-PER"]])["f1"] == 0.0


# --- evaluation ----------------------------------------------------------------------------------------------

CONLL = ("-DOCSTART- O\n\nthe O\nactor B-PER\nin O\nParis B-LOC\nwas O\ngood O\n\n"
         "what O\na O\nlong O\nstory O\nabout O\nfrance B-LOC\n.  O\n\nCafé B-LOC\nnaïve I-LOC\n😀 O\n")


def test_evaluate_ner_model_with_itself(ner_model, tmp_path):
    runner, _, _ = ner_model("bert")
    path = tmp_path / "small.conll"
    path.write_text(CONLL, encoding="utf-8")
    data = ner.load_conll(path)
    events = []
    result = ner.evaluate_ner(runner, runner, data, progress=events.append)
    assert result.examples == 3 and result.agreement == 1.0 and result.n_disagreements == 0
    assert set(result.fp32.metrics) == {"precision", "recall", "f1"} and result.fp32.metrics == result.int8.metrics
    assert result.details["gold_entities"] == 4 and events[-1].done == 3
    json.dumps(result.to_dict())
    assert ner.evaluate_ner(runner, runner, data, limit=1).examples == 1
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        ner.evaluate_ner(runner, runner, data, cancel=cancel)


def test_evaluate_ner_checks_tags_before_running(ner_model, tmp_path):
    runner, _, _ = ner_model("bert")
    path = tmp_path / "bad.conll"
    path.write_text(CONLL + "\nParis B-CITY\n", encoding="utf-8")
    calls = []
    counting = SimpleNamespace(spec=runner.spec, tokenizer=runner.tokenizer, input_names=runner.input_names,
                               run=lambda feeds: calls.append(1) or runner.run(feeds))
    with pytest.raises(InputError, match="bad.conll, line 22: unknown tag 'B-CITY'"):
        ner.evaluate_ner(counting, counting, ner.load_conll(path), limit=1)
    assert not calls


def test_evaluate_ner_reports_disagreements(ner_model, tmp_path):
    runner, _, _ = ner_model("bert")
    other, _, _ = ner_model("electra")  # same labels and vocabulary, other weights: other entities
    path = tmp_path / "small.conll"
    path.write_text(CONLL, encoding="utf-8")
    result = ner.evaluate_ner(runner, other, ner.load_conll(path))
    assert result.n_disagreements > 0 and result.agreement < 1
    row = result.disagreements[0]
    assert row.where.startswith("line ") and row.gold and ":" in row.gold[0]


def _reference_word_tags(model, tok, words, stride):
    """transformers windows + the first sub-token of each word, from the window where it is most central."""
    import torch

    text = " ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
    enc = tok(text, return_offsets_mapping=True, return_overflowing_tokens=True, stride=stride, truncation=True,
              padding=True, return_special_tokens_mask=True, return_tensors="pt")
    offsets, special = enc.pop("offset_mapping").tolist(), enc.pop("special_tokens_mask").tolist()
    enc.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        label_ids = model(**enc).logits.argmax(-1).tolist()  # (windows, seq)
    best = {}
    for k in range(len(offsets)):
        content = [i for i, s in enumerate(special[k]) if not s]
        seen = set()
        for i in content:
            a = offsets[k][i][0]
            w = bisect.bisect_right(starts, a) - 1
            if w in seen:
                continue
            seen.add(w)
            if k and i == content[0] and a != starts[w]:
                continue  # the window starts inside this word
            central = min(i - content[0], content[-1] - i)
            if w not in best or central > best[w][0]:
                best[w] = (central, model.config.id2label[label_ids[k][i]])
    return [best[w][1] for w in range(len(words))]


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_word_tags_read_long_sentences_in_windows(ner_model, family):
    runner, model, tok = ner_model(family)
    words = LONG.split()
    tags, scores, ms = ner.word_tags(runner, words, stride=STRIDE)
    assert len(tags) == len(scores) == len(words) and ms > 0 and all(0 < s <= 1 for s in scores)
    assert tags == _reference_word_tags(model, tok, words, STRIDE)


# --- the real fine-tuned MiniLM ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_conll(tmp_path_factory):
    src = shared_model("minilm-conll")
    return src, Runner.load(export(src, tmp_path_factory.mktemp("minilm-conll")))


def test_real_minilm_conll_matches_pipeline(minilm_conll):
    import transformers
    from tinymodels import load_reference

    src, runner = minilm_conll
    model, tok = load_reference(src), transformers.AutoTokenizer.from_pretrained(str(src))
    texts = ["Angela Merkel met Emmanuel Macron in Paris, France, on Tuesday.",
             "Zürich-based UBS said José Mourinho 😀 visited Manchester United and the EU."]
    for aggregation in ner.AGGREGATIONS:
        pipe = _pipeline(model, tok, aggregation)
        for text, ours in zip(texts, ner.entities(runner, texts, aggregation=aggregation)):
            _assert_same(ours, pipe(text))
    assert [e.word for e in ner.entities(runner, texts[0])[0]] == ["angela merkel", "emmanuel macron", "paris",
                                                                   "france"]


def test_real_minilm_conll_f1_matches_transformers(minilm_conll):
    import torch
    from tinymodels import load_reference
    import transformers

    src, runner = minilm_conll
    model, tok = load_reference(src), transformers.AutoTokenizer.from_pretrained(str(src))
    data = ner.load_conll(shared_data("conll2003_valid.txt"), labels=runner.spec.labels)
    sentences = data.sentences[:1000]
    ours, theirs = [], []
    for s in sentences:
        ours.append(ner.word_tags(runner, s.words)[0])
        text = " ".join(s.words)
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        with torch.no_grad():
            label_ids = model(**enc).logits[0].argmax(-1).tolist()
        starts = np.cumsum([0] + [len(w) + 1 for w in s.words[:-1]]).tolist()
        tags = {}
        for (a, b), label in zip(offsets, label_ids):
            if a < b:
                tags.setdefault(bisect.bisect_right(starts, a) - 1, model.config.id2label[label])
        theirs.append([tags.get(w, "O") for w in range(len(s.words))])
    gold = [list(s.tags) for s in sentences]
    f1_ours, f1_theirs = ner.entity_metrics(gold, ours)["f1"], ner.entity_metrics(gold, theirs)["f1"]
    assert abs(f1_ours - f1_theirs) <= 0.3 and f1_ours > 85
    assert sum(a == b for a, b in zip(ours, theirs)) >= 0.99 * len(sentences)
