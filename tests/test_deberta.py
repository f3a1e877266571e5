"""DeBERTa-v2/v3: FP32 ONNX (plain and fused) vs transformers' DebertaV2* on padded batches, every head and the
config switches (relative attention, position buckets fewer than the sequence, shared keys, pos_att_type, token
types, absolute positions, embed_proj), the relative-position buckets, bad configs and the INT8 guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from parity import max_abs_diff, padded_batch, run_onnx, run_reference
from tinymodels import WORDS, load_reference, save_perturbed

from app.core.errors import UnsupportedModelError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source
from app.core.spec import load_spec

TOL = 1e-4
HEADS = {"base": "DebertaV2Model", "sequence-classification": "DebertaV2ForSequenceClassification",
         "question-answering": "DebertaV2ForQuestionAnswering",
         "token-classification": "DebertaV2ForTokenClassification"}
# DeBERTa-v3's layout, small: shared keys, both terms, log buckets (8, fewer than the test sequences), normed
# relative embeddings, no token types, no absolute positions.
V3 = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=-1,
          share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0, position_biased_input=False)
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # DeBERTa-v3's ids 0..3, then [MASK]


def unigram_tokenizer(folder: Path):
    """A small Unigram tokenizer laid out as DeBERTa-v3's tokenizer.json (Metaspace, [CLS] A [SEP] B [SEP])."""
    import transformers
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 5)]
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS, unk_token="[UNK]"))
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]",
                                                pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]",
                                                model_max_length=64)
    fast.save_pretrained(folder)
    return fast


def make_tiny_deberta(folder: Path, head: str, *, labels=("NEGATIVE", "POSITIVE", "NEUTRAL"), seed: int = 0,
                      hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int | None = None,
                      max_positions: int = 72, vocab_size: int | None = None, **config) -> Path:
    """A tiny random DeBERTa-v2 in Hugging Face layout (weights perturbed away from their initialisation)."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = unigram_tokenizer(folder)
    if head == "question-answering":
        labels = ("LABEL_0", "LABEL_1")
    id2label = dict(enumerate(labels))
    settings = V3 | config
    cfg = transformers.DebertaV2Config(
        vocab_size=vocab_size or len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 2 * hidden, max_position_embeddings=max_positions, pad_token_id=0,
        id2label=id2label, label2id={v: k for k, v in id2label.items()}, **settings)
    return save_perturbed(folder, HEADS[head], cfg, seed=seed, scale=lambda name: 0.3 if "LayerNorm" in name else 0.08)


def check_parity(folder: Path, out: Path, *, lengths=(40, 23, 5), fused: bool = False) -> dict[str, float]:
    result = export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(fused=fused))
    ref = load_reference(folder)
    feed = padded_batch(ref.config.vocab_size, 0, lengths=lengths)
    ours = run_onnx(result.onnx_path, feed)
    diffs = max_abs_diff(ours, run_reference(ref, feed, result.spec.input_names), feed["attention_mask"])
    assert diffs and max(diffs.values()) < TOL, diffs
    return diffs


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("head", list(HEADS))
def test_v3_heads_match_transformers(tmp_path, head, fused):
    check_parity(make_tiny_deberta(tmp_path / "m", head), tmp_path / "onnx", fused=fused)


VARIANTS = {
    # DeBERTa-v2: own position projections, no buckets but a clipped range, token types, absolute positions
    "v2": dict(share_att_key=False, position_buckets=-1, max_relative_positions=16, type_vocab_size=2,
               position_biased_input=True, norm_rel_ebd="none", pos_att_type="p2c|c2p"),
    "c2p_only": dict(pos_att_type=["c2p"]),
    "p2c_only": dict(pos_att_type=["p2c"], share_att_key=False),
    "no_relative": dict(relative_attention=False, position_biased_input=True),  # scale still √(3d)
    "no_pos_att": dict(pos_att_type=[], position_biased_input=True, type_vocab_size=2),
    "buckets_64_max_512": dict(position_buckets=64, max_relative_positions=512),
    "embed_proj": dict(embedding_size=16, type_vocab_size=2),
    "gelu_tanh_pooler": dict(pooler_hidden_act="tanh", hidden_act="gelu_new"),
}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_variants_match(tmp_path, variant, fused):
    folder = make_tiny_deberta(tmp_path / "m", "sequence-classification", **VARIANTS[variant])
    check_parity(folder, tmp_path / "onnx", fused=fused)


def test_short_and_single_token_batches(tmp_path):
    folder = make_tiny_deberta(tmp_path / "m", "token-classification")
    check_parity(folder, tmp_path / "a", lengths=(3, 1))
    check_parity(folder, tmp_path / "b", lengths=(64,), fused=True)


def test_inputs_follow_type_vocab_size(tmp_path):
    no_types = make_tiny_deberta(tmp_path / "v3", "sequence-classification")
    with_types = make_tiny_deberta(tmp_path / "v2", "sequence-classification", type_vocab_size=2)
    assert load_spec(no_types).input_names == ("input_ids", "attention_mask")
    assert load_spec(with_types).input_names == ("input_ids", "attention_mask", "token_type_ids")
    for folder in (no_types, with_types):
        result = export_model(local_source(ModelRef.parse(str(folder))), folder / "onnx", ExportConfig(fused=True))
        model = onnx.load(result.onnx_path)
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == list(result.spec.input_names)
        ops = {n.op_type for n in model.graph.node}
        assert "MultiHeadAttention" in ops and "Softmax" not in ops


def test_log_buckets_equal_transformers():
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import (
        make_log_bucket_position,
    )

    from app.core.export.families.deberta import log_bucket_positions

    for buckets, max_position in ((256, 512), (8, 72), (64, 512), (32, 128), (256, 1024)):
        r = np.arange(-(max_position - 1), max_position)
        ref = make_log_bucket_position(torch.tensor(r), buckets, max_position).long().numpy()
        assert (log_bucket_positions(r, buckets, max_position) == ref).all(), (buckets, max_position)


@pytest.mark.parametrize("change, words", [
    (dict(conv_kernel_size=3), "convolution"),
    (dict(pos_att_type=["c2p", "p2p"]), "p2p"),
    (dict(attention_head_size=4), "attention_head_size"),
    (dict(pooler_hidden_act="swish"), "pooler_hidden_act"),
])
def test_unsupported_configs_are_refused(change, words):
    from app.core.spec import spec_from_config

    config = dict(model_type="deberta-v2", architectures=["DebertaV2ForSequenceClassification"], vocab_size=100,
                  hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **change)
    with pytest.raises(UnsupportedModelError, match=words):
        spec_from_config(config)


def test_int8_keeps_answers(tmp_path):
    """The store's convert (fused FP32 + guarded INT8) on a tiny v3: same labels on the calibration set."""
    from app.core.store import ConvertConfig, convert

    folder = make_tiny_deberta(tmp_path / "m", "sequence-classification")
    entry = convert(str(folder), ConvertConfig())
    q = entry.manifest["quantization"]
    assert entry.int8_dir is not None, q["explanation"]
    assert q["chosen"]["agreement"]["agreement"] >= 0.995
    ops = {n.op_type for n in onnx.load(entry.int8_dir / "model.onnx").graph.node}
    assert "DynamicQuantizeMatMul" in ops


# --- SentencePiece: spm.model without tokenizer.json ------------------------------------------------------------

def write_spm_folder(folder: Path, *, lower: bool = False, split_by_punct: bool = False) -> Path:
    """A DeBERTa-v3-like repo's tokenizer files without tokenizer.json: spm.model (pieces and scores of a trained
    Unigram model, [PAD] [CLS] [SEP] control pieces, [UNK] at 3), added_tokens.json ([MASK]) and the config."""
    import json

    from transformers.utils import sentencepiece_model_pb2_new as pb2

    folder.mkdir(parents=True, exist_ok=True)
    trained = json.loads(unigram_tokenizer(folder / "trained").backend_tokenizer.to_str())["model"]["vocab"]
    proto = pb2.ModelProto()
    for text, kind in (("[PAD]", 3), ("[CLS]", 3), ("[SEP]", 3), ("[UNK]", 2)):
        proto.pieces.add(piece=text, score=0.0, type=kind)
    for text, score in trained:
        if text not in SPECIALS:
            proto.pieces.add(piece=text, score=score, type=1)
    proto.trainer_spec.model_type = 1
    proto.trainer_spec.unk_id = 3
    proto.trainer_spec.pad_id = 0
    proto.trainer_spec.bos_id = 1
    proto.trainer_spec.eos_id = 2
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    (folder / "spm.model").write_bytes(proto.SerializeToString())
    (folder / "added_tokens.json").write_text(json.dumps({"[MASK]": len(proto.pieces)}), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": lower, "split_by_punct": split_by_punct, "model_max_length": 64, "cls_token": "[CLS]",
         "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}), encoding="utf-8")
    return folder


SPM_TEXTS = ["the movie was good", "  The  MOVIE was   great!  ", "what? who... paris, france (capital)",
             "café naïve 東京 😀 zebra", "a [MASK] day", ""]


@pytest.mark.parametrize("lower, punct", [(False, False), (True, False), (False, True)])
def test_spm_model_converts_like_transformers(tmp_path, lower, punct):
    """Our protobuf reading + assembly vs transformers' DebertaV2Converter on the same spm.model."""
    from types import SimpleNamespace

    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import DebertaV2Converter

    from app.core.tasks.sentencepiece import read_model
    from app.core.tasks.tokenizer import load_tokenizer

    folder = write_spm_folder(tmp_path / "spm", lower=lower, split_by_punct=punct)
    spm = read_model(folder / "spm.model")
    assert spm.unk_id == 3 and spm.pieces[:4] == (("[PAD]", 0.0, 3), ("[CLS]", 0.0, 3), ("[SEP]", 0.0, 3),
                                                   ("[UNK]", 0.0, 2))
    vocab = {p[0]: i for i, p in enumerate(spm.pieces)}
    original = SimpleNamespace(vocab_file=str(folder / "spm.model"), do_lower_case=lower, split_by_punct=punct,
                               add_prefix_space=True, legacy=True, convert_tokens_to_ids=vocab.get)
    ref = DebertaV2Converter(original).converted()
    ref.add_special_tokens([AddedToken("[MASK]", normalized=False, special=True)])
    ours = load_tokenizer(folder, load_spec(make_tiny_deberta(tmp_path / "m", "base")))
    assert ours.source == "spm.model"
    assert ours.tokenizer.get_vocab() == ref.get_vocab()
    for text in SPM_TEXTS:
        for pair in (None, "This example is fun."):
            a = ours.encode([text], [pair] if pair else None)[0]
            b = ref.encode(text, pair) if pair else ref.encode(text)
            assert (a.ids, a.type_ids, a.offsets) == (b.ids, b.type_ids, b.offsets), text


def test_bad_spm_models_are_refused(tmp_path):
    from transformers.utils import sentencepiece_model_pb2_new as pb2

    from app.core.errors import InvalidModelError
    from app.core.tasks.tokenizer import load_tokenizer

    spec = load_spec(make_tiny_deberta(tmp_path / "m", "base"))
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "spm.model").write_bytes(b"\x0a\xff\xff\xff\x0fnot a model")
    with pytest.raises(InvalidModelError, match="not a readable SentencePiece model"):
        load_tokenizer(folder, spec)
    proto = pb2.ModelProto()
    proto.pieces.add(piece="[UNK]", score=0.0, type=2)
    proto.trainer_spec.model_type = 2  # BPE
    (folder / "spm.model").write_bytes(proto.SerializeToString())
    with pytest.raises(UnsupportedModelError, match="only Unigram"):
        load_tokenizer(folder, spec)


def test_spm_only_repo_converts_end_to_end(tmp_path):
    """A DeBERTa folder whose only tokenizer file is spm.model: export, then the runner reads spm.model."""
    from app.core.tasks.runner import Runner

    folder = make_tiny_deberta(tmp_path / "m", "sequence-classification")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    write_spm_folder(folder)
    result = export_model(local_source(ModelRef.parse(str(folder))), tmp_path / "onnx", ExportConfig())
    runner = Runner.load(result.out_dir)
    assert runner.tokenizer.source == "spm.model"
    assert runner.classify(["the movie was good"])[0].label in ("NEGATIVE", "POSITIVE", "NEUTRAL")
