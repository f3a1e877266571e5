"""ModernBERT: FP32 ONNX (plain and fused) vs transformers for every head, on windows shorter than the sequence
and every global/local layer pattern; its config variants and refusals; its tokenizer; convert → INT8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from parity import max_abs_diff, padded_batch, run_onnx, run_reference
from tinymodels import WORDS, load_reference, save_perturbed

from app.core.errors import UnsupportedModelError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source

TOL = 1e-4
HEADS = {"base": "ModernBertModel", "sequence-classification": "ModernBertForSequenceClassification",
         "token-classification": "ModernBertForTokenClassification",
         "question-answering": "ModernBertForQuestionAnswering", "masked-lm": "ModernBertForMaskedLM"}
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def write_tokenizer(folder: Path):
    """A byte-level BPE tokenizer.json laid out as ModernBERT's: [CLS] $A [SEP] ($B [SEP])."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 7)]
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=SPECIALS)
    tok = bpe._tokenizer
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                                sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                                model_max_length=8192)
    fast.save_pretrained(folder)
    return fast


def make_modernbert(folder: Path, head: str = "sequence-classification", *, seed: int = 0, num_labels: int = 3,
                    noise: float = 0.08, **overrides) -> Path:
    """A tiny random ModernBERT (hidden 32, 3 layers, 4 heads), weights perturbed off their initialisation by
    `noise` (0: transformers' own init)."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = write_tokenizer(folder)
    if head == "question-answering":
        num_labels = 2
    labels = {i: n for i, n in enumerate(["NEGATIVE", "POSITIVE", "NEUTRAL", "MIXED", "OTHER"][:num_labels])}
    config = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, max_position_embeddings=128, local_attention=8,
                  global_attn_every_n_layers=3, pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                  sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                  id2label=labels, label2id={v: k for k, v in labels.items()}, global_rope_theta=1000.0,
                  local_rope_theta=50.0)
    config.update(overrides)
    return save_perturbed(folder, HEADS[head], transformers.ModernBertConfig(**config), seed=seed,
                          scale=lambda name: noise * (3.75 if "norm" in name else 1.0))


def export(folder: Path, out: Path, **config):
    return export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(**config))


def check_parity(folder: Path, out: Path, *, lengths=(23, 15, 6), **config) -> dict[str, float]:
    result = export(folder, out, **config)
    ref = load_reference(folder)
    feed = padded_batch(ref.config.vocab_size, ref.config.pad_token_id, lengths=lengths)
    ours = run_onnx(result.onnx_path, feed)
    diffs = max_abs_diff(ours, run_reference(ref, feed, result.spec.input_names), feed["attention_mask"])
    assert diffs and max(diffs.values()) < TOL, diffs
    assert all(np.isfinite(v).all() for v in ours.values())  # padded rows too: no NaN from all-masked windows
    return diffs


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("modernbert")
    cache: dict = {}

    def get(head: str, **overrides) -> Path:
        key = (head, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = make_modernbert(root / f"m{len(cache)}", head, **overrides)
        return cache[key]

    return get


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("head", ["base", "sequence-classification", "token-classification", "question-answering"])
def test_heads_match_transformers(models, tmp_path, head, fused):
    diffs = check_parity(models(head), tmp_path / "onnx", fused=fused)
    assert set(diffs) == {"base": {"token_embeddings", "sentence_embedding"},
                          "sequence-classification": {"logits"}, "token-classification": {"logits"},
                          "question-answering": {"start_logits", "end_logits"}}[head]
    ops = {n.op_type for n in onnx.load(tmp_path / "onnx" / "model.onnx").graph.node}
    assert ("MultiHeadAttention" in ops) == fused and ("Softmax" in ops) != fused


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("every", [1, 2, 3])
def test_global_local_patterns_and_short_windows(models, tmp_path, every, fused):
    """Every n-th layer global, the rest local with a window (±2 .. ±4) much shorter than the sequence."""
    folder = models("sequence-classification", global_attn_every_n_layers=every, local_attention=4 + 2 * every)
    check_parity(folder, tmp_path / "onnx", lengths=(37, 20, 9, 1), fused=fused)


@pytest.mark.parametrize("overrides", [
    dict(classifier_pooling="mean"),
    dict(attention_bias=True, mlp_bias=True, norm_bias=True, classifier_bias=True),
    dict(classifier_activation="relu", hidden_activation="gelu_pytorch_tanh", num_labels=5),
    dict(local_attention=256, global_attn_every_n_layers=2),  # a window longer than the sequence
])
@pytest.mark.parametrize("fused", [False, True])
def test_config_variants(models, tmp_path, overrides, fused):
    check_parity(models("sequence-classification", **overrides), tmp_path / "onnx", fused=fused)


def test_masked_lm_checkpoint_exports_its_encoder(models, tmp_path):
    """ModernBERT-base is a ForMaskedLM checkpoint: feature extraction drops the MLM head, as ModernBertModel."""
    import torch

    folder = models("masked-lm")
    result = export(folder, tmp_path / "onnx")
    assert result.spec.task == "feature-extraction"
    ref = load_reference(folder)
    feed = padded_batch(ref.config.vocab_size, ref.config.pad_token_id, lengths=(19, 5))
    with torch.no_grad():
        hidden = ref.model(input_ids=torch.tensor(feed["input_ids"]),
                           attention_mask=torch.tensor(feed["attention_mask"])).last_hidden_state.numpy()
    ours = run_onnx(result.onnx_path, feed)["token_embeddings"]
    m = feed["attention_mask"] == 1
    assert np.abs(ours[m] - hidden[m]).max() < TOL


def test_transformers5_config_layout(models, tmp_path):
    """config.json as transformers 5 writes it (layer_types, rope_parameters) and as the Hub has it read the same."""
    from app.core.spec import load_spec

    folder = models("base", global_attn_every_n_layers=2)
    config = json.loads((folder / "config.json").read_text())
    assert "layer_types" in config and "rope_parameters" in config  # what save_pretrained wrote
    options = load_spec(folder).options
    assert options["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
    assert (options["global_theta"], options["local_theta"], options["window"]) == (1000.0, 50.0, 4)
    hub = {k: v for k, v in config.items() if k not in ("layer_types", "rope_parameters")}
    hub.update(global_attn_every_n_layers=2, global_rope_theta=1000.0, local_rope_theta=50.0)
    (tmp_path / "config.json").write_text(json.dumps(hub))
    assert load_spec(tmp_path).options == options


def test_flash_attention_settings_change_nothing(models, tmp_path):
    """Hub configs carry flash-attention knobs (unpadding, determinism, torch.compile): same math, same graph."""
    import shutil

    src = models("sequence-classification")
    folder = shutil.copytree(src, tmp_path / "src")
    config = json.loads((folder / "config.json").read_text())
    config.update(_attn_implementation="flash_attention_2", deterministic_flash_attn=True, reference_compile=True,
                  sparse_prediction=True)
    (folder / "config.json").write_text(json.dumps(config))
    result = export(folder, tmp_path / "onnx")
    ref = load_reference(src)
    feed = padded_batch(ref.config.vocab_size, ref.config.pad_token_id, lengths=(23, 6))
    diffs = max_abs_diff(run_onnx(result.onnx_path, feed), run_reference(ref, feed, result.spec.input_names),
                         feed["attention_mask"])
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("change, expect", [
    (dict(rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}), "RoPE scaling"),
    (dict(classifier_pooling="max"), "classifier_pooling 'max'"),
    (dict(classifier_activation="silu"), "classifier_activation 'silu'"),
    (dict(layer_types=["full_attention", "chunked_attention", "full_attention"]), "layer_types"),
])
def test_unsupported_configs_are_refused(models, tmp_path, change, expect):
    from app.core.spec import load_spec

    config = json.loads((models("base") / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=expect):
        load_spec(tmp_path)


def test_tokenizer_matches_transformers(models, tmp_path):
    import transformers

    from app.core.tasks.tokenizer import load_tokenizer

    folder = models("sequence-classification")
    ours = load_tokenizer(folder)
    ref = transformers.AutoTokenizer.from_pretrained(folder)
    texts = ["the movie was great fun", "Café naïve 東京 😀", "what [SEP] is [MASK] ?"]
    pairs = ["a terrible film", "paris", "why"]
    batch, _ = ours.batch(texts, pairs)
    expect = ref(texts, pairs, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch.input_ids, expect["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, expect["attention_mask"])
    assert ours.pad_token_id == ref.pad_token_id and ours.cls_token_id == ref.cls_token_id
    assert batch.input_ids[0, 0] == ref.cls_token_id


def test_convert_int8_agrees_with_fp32(models, tmp_path):
    from app.core.calibration import build_calibration
    from app.core.quantize import QuantizeConfig, collect, validate
    from app.core.spec import load_spec
    from app.core.store import ConvertConfig, convert

    entry = convert(str(models("sequence-classification")), ConvertConfig(force=QuantizeConfig()), root=tmp_path)
    spec = load_spec(entry.fp32_dir)
    cal = build_calibration(entry.fp32_dir, spec)
    collect(entry.fp32_dir / "model.onnx", cal)
    agreement = validate(entry.int8_dir / "model.onnx", cal, spec=spec)
    assert agreement.cosine > 0.95 and agreement.agreement > 0.8, agreement
