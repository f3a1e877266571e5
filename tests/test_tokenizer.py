"""Tokenization parity with transformers' AutoTokenizer (test-only reference), from tokenizer.json and rebuilt
from vocab files, and the model-derived maximum length."""

from __future__ import annotations

import json
import shutil

import pytest

from app.core.errors import InputError, InvalidModelError, UnsupportedModelError
from app.core.spec import load_spec
from app.core.tasks.tokenizer import load_tokenizer, model_max_length
from conftest import shared_model

LONG = ("The quick brown fox jumps over the lazy dog near the river bank in Paris. " * 60).strip()
TEXTS = [
    "Hello world!",
    "The movie was GREAT, really great.",
    "Café naïve résumé — déjà vu, Ångström, façade, Zürich",
    "e\u0301le\u0300ve (combining accents)",
    "東京は日本の首都です。 北京欢迎你",
    "I love it 😀👍🏽 🇫🇷 !!!",
    "Visit https://www.example.com/path?q=1&x=2 or mail me@example.org",
    "tabs\tand\nnewlines\r\n and  double  spaces",
    "zero\u200bwidth and control\x00chars\x07",
    "[CLS] [SEP] <s> </s> [MASK] <mask> inside text",
    "numbers 3.14159 1,000,000 2024-01-01 #hashtag @user",
    "",
    "   ",
    "\n\t ",
    LONG,
]
PAIRS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("", "only a second text"),
    ("only a first text", ""),
    ("Café?", "東京 😀 https://x.org"),
    (LONG, LONG[:700]),
    ("short question", LONG),
]
FAMILIES = ["bert", "distilbert", "electra", "roberta", "xlm-roberta", "camembert"]


def _reference(folder):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _assert_parity(folder, ours=None, ref=None):
    ours = ours or load_tokenizer(folder)
    ref = ref or _reference(folder)
    n = ours.max_length
    for text in TEXTS:
        got = ours.encode([text])[0]
        want = ref(text, truncation=True, max_length=n)
        assert got.ids == want["input_ids"], text
        assert got.attention_mask == want["attention_mask"], text
        if "token_type_ids" in want:
            assert got.type_ids == want["token_type_ids"], text
    for a, b in PAIRS:
        got = ours.encode([a], [b])[0]
        want = ref(a, b, truncation=True, max_length=n)
        assert got.ids == want["input_ids"], (a[:40], b[:40])
        if "token_type_ids" in want:
            assert got.type_ids == want["token_type_ids"], (a[:40], b[:40])
    # Untruncated, too: every text in full.
    for text in TEXTS:
        assert ours.encode([text], truncation=None)[0].ids == ref(text)["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_json_parity(tiny_models, family):
    _assert_parity(tiny_models(family, "sequence-classification"))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_rebuilt_from_vocab_files_parity(tiny_models, tmp_path, family):
    src = tiny_models(family, "sequence-classification")
    folder = tmp_path / family
    shutil.copytree(src, folder)
    (folder / "tokenizer.json").unlink()
    ours = load_tokenizer(folder)
    assert ours.source == ("vocab.txt" if family == "bert" else "vocab.json+merges.txt")
    _assert_parity(folder, ours)


@pytest.mark.parametrize("lower,strip", [(False, None), (True, False), (False, True)])
def test_rebuilt_wordpiece_honours_case_and_accents(tiny_models, tmp_path, lower, strip):
    import transformers

    folder = tmp_path / "wp"
    shutil.copytree(tiny_models("bert", "sequence-classification"), folder)
    (folder / "tokenizer.json").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.update(do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    ours = load_tokenizer(folder)
    vocab = [line for line in (folder / "vocab.txt").read_text(encoding="utf-8").split("\n") if line]
    ref = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=lower,
                                     strip_accents=strip, model_max_length=cfg["model_max_length"])
    _assert_parity(folder, ours, ref)


def test_max_length_comes_from_the_model(tiny_models, tmp_path):
    folder = tiny_models("roberta", "sequence-classification")
    spec = load_spec(folder)
    assert spec.max_position_embeddings == 72
    assert model_max_length(spec, {}) == 70  # RoBERTa positions start after the padding index
    assert model_max_length(spec, {"model_max_length": 64}) == 64
    assert model_max_length(spec, {"model_max_length": int(1e30)}) == 70
    assert model_max_length(spec, {"model_max_length": 4096}) == 70
    assert model_max_length(load_spec(tiny_models("bert", "sequence-classification")), {}) == 72
    # A tokenizer.json saved with a small truncation does not limit us; nor does one saved with padding.
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    data = json.loads((copy / "tokenizer.json").read_text())
    data["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = {"strategy": {"Fixed": 50}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 1,
                       "pad_type_id": 0, "pad_token": "<pad>"}
    (copy / "tokenizer.json").write_text(json.dumps(data))
    tok = load_tokenizer(copy)
    assert tok.max_length == 64
    enc = tok.encode([LONG])[0]
    assert len(enc.ids) == 64 and enc.overflowing
    assert len(tok.encode(["hello"])[0].ids) < 8


def test_batch_arrays_are_padded_int64(tiny_models):
    tok = load_tokenizer(tiny_models("roberta", "sequence-classification"))
    batch, encodings = tok.batch(["a", "the movie was good"], ["b", ""])
    assert batch.input_ids.dtype.name == "int64" and batch.input_ids.shape == batch.attention_mask.shape
    assert batch.input_ids[0, -1] == tok.pad_token_id == 1
    assert batch.attention_mask[0].sum() == len(encodings[0].ids)
    assert set(batch.feeds(("input_ids", "attention_mask"))) == {"input_ids", "attention_mask"}


def test_qa_windows_with_stride_match_transformers(tiny_models):
    folder = tiny_models("bert", "question-answering")
    ours, ref = load_tokenizer(folder), _reference(folder)
    question, context = "what is the capital?", LONG[:900]
    first = ours.encode([question], [context], truncation="only_second", max_length=40, stride=10)[0]
    windows = [first, *first.overflowing]
    want = ref(question, context, truncation="only_second", max_length=40, stride=10,
               return_overflowing_tokens=True, return_offsets_mapping=True)
    assert [w.ids for w in windows] == want["input_ids"]
    assert [w.offsets for w in windows] == [[tuple(o) for o in m] for m in want["offset_mapping"]]


def test_question_too_long_for_a_window_is_an_input_error(tiny_models):
    tok = load_tokenizer(tiny_models("bert", "question-answering"))
    with pytest.raises(InputError, match="tokens"):
        tok.encode([LONG], ["context"], truncation="only_second", max_length=32, stride=4)


def test_missing_or_broken_tokenizer_files(tiny_models, tmp_path):
    folder = tmp_path / "none"
    shutil.copytree(tiny_models("bert", "sequence-classification"), folder)
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink()
    (folder / "sentencepiece.bpe.model").write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="SentencePiece"):
        load_tokenizer(folder)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(InvalidModelError, match="tokenizer.json"):
        load_tokenizer(folder)


def test_real_minilm_parity():
    folder = shared_model("minilm-sst2")
    ours = load_tokenizer(folder)
    assert ours.max_length == 512  # not the 128 its tokenizer.json was saved with
    _assert_parity(folder, ours)
