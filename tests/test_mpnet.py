"""MPNet: FP32 ONNX (plain and fused) vs transformers for every head, on sequences longer than the exact
relative buckets and past the bucket horizon; the bucket look-up table vs transformers; the tokenizer; an
all-mpnet-base-v2 style sentence-transformers folder through the embeddings task; convert → INT8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from parity import max_abs_diff, padded_batch, run_onnx, run_reference
from test_embeddings import TEXTS, _have_st, reference_pool, write_st_files
from tinymodels import WORDS, load_reference, save_perturbed

from app.core.errors import InvalidModelError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source

TOL = 1e-4
HEADS = {"base": "MPNetModel", "sequence-classification": "MPNetForSequenceClassification",
         "token-classification": "MPNetForTokenClassification", "question-answering": "MPNetForQuestionAnswering",
         "masked-lm": "MPNetForMaskedLM"}


def write_tokenizer(folder: Path):
    """A WordPiece vocabulary laid out as MPNet's (<s> <pad> </s> <unk> first, [UNK] for unknown words)."""
    import transformers

    vocab = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]"] + sorted({w.lower() for w in WORDS})
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(vocab)) + ["<mask>"]
    tok = transformers.MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=512)
    tok.save_pretrained(folder)
    return tok


def make_mpnet(folder: Path, head: str = "sequence-classification", *, seed: int = 0, num_labels: int = 3,
               noise: float = 0.08, **overrides) -> Path:
    """A tiny random MPNet (hidden 32, 2 layers, 4 heads, 160 positions), weights perturbed off their init by
    `noise` (0: transformers' own init)."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(folder)
    if head == "question-answering":
        num_labels = 2
    labels = {i: n for i, n in enumerate(["NEGATIVE", "POSITIVE", "NEUTRAL", "MIXED", "OTHER"][:num_labels])}
    config = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=160, layer_norm_eps=1e-7, id2label=labels,
                  label2id={v: k for k, v in labels.items()})
    config.update(overrides)
    return save_perturbed(folder, HEADS[head], transformers.MPNetConfig(**config), seed=seed,
                          scale=lambda name: noise * (3.75 if "LayerNorm" in name else 6.25 if "relative" in name
                                                      else 1.0))


def export(folder: Path, out: Path, **config):
    return export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(**config))


def check_parity(folder: Path, out: Path, *, lengths=(50, 23, 4), **config) -> dict[str, float]:
    result = export(folder, out, **config)
    ref = load_reference(folder)
    feed = padded_batch(ref.config.vocab_size, 1, lengths=lengths)
    diffs = max_abs_diff(run_onnx(result.onnx_path, feed), run_reference(ref, feed, result.spec.input_names),
                         feed["attention_mask"])
    assert diffs and max(diffs.values()) < TOL, diffs
    return diffs


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpnet")
    cache: dict = {}

    def get(head: str, **overrides) -> Path:
        key = (head, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = make_mpnet(root / f"m{len(cache)}", head, **overrides)
        return cache[key]

    return get


def test_bucket_table_matches_transformers():
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from app.core.export.families.mpnet import relative_buckets

    rel = np.arange(-4095, 4096)
    expect = MPNetEncoder.relative_position_bucket(torch.tensor(rel)).numpy()
    np.testing.assert_array_equal(relative_buckets(rel), expect)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("head", ["base", "sequence-classification", "token-classification", "question-answering"])
def test_heads_match_transformers(models, tmp_path, head, fused):
    check_parity(models(head), tmp_path / "onnx", fused=fused)
    model = onnx.load(tmp_path / "onnx" / "model.onnx")
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    ops = {n.op_type for n in model.graph.node}
    assert "MultiHeadAttention" not in ops and "Softmax" in ops  # plain attention ops: faster with the bias
    assert ("BiasGelu" in ops) == fused


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("overrides, lengths", [
    (dict(), (150, 140, 9)),  # distances past max_distance 128: the last log bucket
    (dict(relative_attention_num_buckets=48), (60, 33)),  # transformers reads 32 of them anyway
    (dict(hidden_act="gelu_new", num_labels=5), (40, 12, 1)),
])
def test_long_sequences_and_bucket_configs(models, tmp_path, overrides, lengths, fused):
    check_parity(models("sequence-classification", **overrides), tmp_path / "onnx", lengths=lengths, fused=fused)


def test_fewer_than_32_buckets_is_refused(models, tmp_path):
    from app.core.spec import load_spec

    config = json.loads((models("base") / "config.json").read_text()) | {"relative_attention_num_buckets": 16}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModelError, match="always looks up 32 buckets"):
        load_spec(tmp_path)


def test_tokenizer_matches_transformers(models):
    import transformers

    from app.core.tasks.tokenizer import load_tokenizer

    folder = models("sequence-classification")
    ours = load_tokenizer(folder)
    ref = transformers.AutoTokenizer.from_pretrained(folder)
    texts, pairs = ["the movie was great fun", "Café naïve 東京 😀 zzz", "what </s> is <mask> ?"], ["a film", "x", "y"]
    for p in (None, pairs):
        batch, _ = ours.batch(texts, p)
        expect = ref(texts, p, padding=True, return_tensors="np")
        np.testing.assert_array_equal(batch.input_ids, expect["input_ids"])
        np.testing.assert_array_equal(batch.attention_mask, expect["attention_mask"])
    assert ours.pad_token_id == 1 and ours.max_length == 158


@pytest.mark.parametrize("fused", [False, True])
def test_sentence_transformers_folder(models, tmp_path, fused):
    """all-mpnet-base-v2's layout: MPNetModel + modules.json, mean 1_Pooling, 2_Normalize."""
    from app.core.tasks import embeddings as E
    from app.core.tasks.runner import Runner

    src = shutil.copytree(models("masked-lm"), tmp_path / "src")  # MPNetForMaskedLM weights, as on the Hub
    config = json.loads((src / "config.json").read_text()) | {"architectures": ["MPNetModel"]}
    (src / "config.json").write_text(json.dumps(config))
    write_st_files(src, "mean", True, hidden=32, max_seq_length=128)
    out = export(src, tmp_path / "onnx", fused=fused).out_dir
    runner = Runner.load(out, threads=1)
    vectors, _ = E.embed(runner, TEXTS)
    if _have_st():
        from sentence_transformers import SentenceTransformer

        expect = SentenceTransformer(str(src), device="cpu").encode(TEXTS, convert_to_numpy=True)
    else:  # transformers' hidden states, mean-pooled and normalised in numpy
        import torch
        import transformers

        tok, ref = transformers.AutoTokenizer.from_pretrained(src), transformers.MPNetModel.from_pretrained(src)
        enc = tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = ref.eval()(**enc).last_hidden_state.numpy()
        expect = reference_pool(hidden, enc["attention_mask"].numpy(), "mean", True)
    np.testing.assert_allclose(vectors, expect, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_convert_int8_agrees_with_fp32(models, tmp_path):
    from app.core.calibration import build_calibration
    from app.core.quantize import QuantizeConfig, collect, validate
    from app.core.spec import load_spec
    from app.core.store import ConvertConfig, convert

    for head in ("sequence-classification", "question-answering"):
        entry = convert(str(models(head)), ConvertConfig(force=QuantizeConfig()), root=tmp_path / head)
        spec = load_spec(entry.fp32_dir)
        cal = build_calibration(entry.fp32_dir, spec)
        collect(entry.fp32_dir / "model.onnx", cal)
        agreement = validate(entry.int8_dir / "model.onnx", cal, spec=spec)
        assert agreement.cosine > 0.95, (head, agreement)


def test_a_vocab_txt_only_folder_pairs_texts_as_mpnet_does(models, tmp_path):
    import transformers

    from app.core.tasks.tokenizer import load_tokenizer

    source = models("sequence-classification")
    folder = tmp_path / "vocab-only"
    shutil.copytree(source, folder)
    reference = transformers.AutoTokenizer.from_pretrained(str(source))
    (folder / "tokenizer.json").unlink()  # the older layout: vocab.txt and the special tokens only
    vocab = reference.get_vocab()
    (folder / "vocab.txt").write_text("".join(w + "\n" for w in sorted(vocab, key=vocab.get)), encoding="utf-8")
    ours = load_tokenizer(folder)
    a, b = "the movie was great", "a fine film"
    want = reference(a, b)["input_ids"]  # <s> A </s></s> B </s>
    assert ours.encode([a], [b])[0].ids == want and want.count(reference.sep_token_id) == 3
    assert ours.encode([a])[0].ids == reference(a)["input_ids"]
