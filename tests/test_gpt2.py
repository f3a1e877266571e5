"""GPT-2 / DistilGPT-2 exported without torch vs transformers' GPT2 classes: logits and the KV cache within 1e-4
on padded batches, with and without past, plain and fused graphs, and bad checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import WORDS, save_perturbed

from app.core.errors import InvalidModelError, UnsupportedModelError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source

TOL = 1e-4
HEADS = {"base": "GPT2Model", "lm": "GPT2LMHeadModel", "sequence-classification": "GPT2ForSequenceClassification",
         "token-classification": "GPT2ForTokenClassification"}


def gpt2_tokenizer(folder: Path, vocab_size: int = 300):
    """A byte-level BPE with <|endoftext|> = 0, saved as GPT2TokenizerFast saves it (tokenizer.json)."""
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 7)]
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    tok = transformers.GPT2TokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                                         model_max_length=64)
    tok.save_pretrained(folder)
    return tok


def make_tiny_gpt2(folder: Path, head: str = "lm", *, seed: int = 0, hidden: int = 32, layers: int = 2,
                   heads: int = 4, positions: int = 64, perturb: float = 0.08, **overrides) -> Path:
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = gpt2_tokenizer(folder)
    config = transformers.GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=heads,
                                     n_positions=positions, bos_token_id=0, eos_token_id=0, num_labels=3,
                                     **overrides)
    if head == "sequence-classification":
        config.pad_token_id = 0
    return save_perturbed(folder, HEADS[head], config, seed=seed, scale=lambda name: 0.3 if "ln_" in name else perturb)


def reference(folder: Path):
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    return getattr(transformers, config.architectures[0]).from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager").eval()


def export(folder: Path, out: Path, **config):
    return export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(**config))


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def right_padded(vocab: int, lengths=(11, 7, 3), seed: int = 0):
    rng = np.random.default_rng(seed)
    mask = (np.arange(max(lengths))[None] < np.array(lengths)[:, None]).astype(np.int64)  # (batch, seq)
    return np.where(mask == 1, rng.integers(1, vocab, mask.shape), 0), mask


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    cache = {}

    def get(head: str, **kw) -> Path:
        key = (head, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = make_tiny_gpt2(root / f"{head}-{len(cache)}", head, **kw)
        return cache[key]

    return get


@pytest.mark.parametrize("head", ["base", "sequence-classification", "token-classification"])
@pytest.mark.parametrize("fused", [False, True])
def test_heads_without_cache_match_transformers(tiny, tmp_path, head, fused):
    import torch

    folder = tiny(head)
    result = export(folder, tmp_path / "onnx", fused=fused)
    ref = reference(folder)
    ids, mask = right_padded(ref.config.vocab_size)
    sess = session(result.onnx_path)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
    ours = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_ids": ids, "attention_mask": mask})))
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    if head == "base":
        a, b = ours["token_embeddings"], out.last_hidden_state.numpy()
        assert np.abs(a - b)[mask == 1].max() < TOL
    elif head == "token-classification":
        assert np.abs(ours["logits"] - out.logits.numpy())[mask == 1].max() < TOL
    else:  # the last real token's score
        assert np.abs(ours["logits"] - out.logits.numpy()).max() < TOL


def _cache_feeds(ids, mask, past: dict | None, n_layers: int, heads: int, d: int):
    p = 0 if past is None else next(iter(past.values())).shape[2]
    past = past or {f"past_key_values.{i}.{kv}": np.zeros((len(ids), heads, 0, d), np.float32)
                    for i in range(n_layers) for kv in ("key", "value")}
    positions = np.maximum(np.cumsum(mask, 1)[:, p:] - 1, 0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, **past}


@pytest.mark.parametrize("shape", [dict(), dict(hidden=48, layers=3, heads=6, activation_function="gelu"),
                                   dict(hidden=64, layers=1, heads=2, scale_attn_by_inverse_layer_idx=True)])
@pytest.mark.parametrize("fused", [False, True])
def test_lm_with_and_without_past_matches_transformers(tiny, tmp_path, shape, fused):
    """Prompt on a right-padded batch (empty past), then two steps of one token each with the cache."""
    import torch

    folder = tiny("lm", **shape)
    result = export(folder, tmp_path / "onnx", fused=fused)
    ref = reference(folder)
    c = ref.config
    d = c.n_embd // c.n_head
    sess = session(result.onnx_path)
    names = [o.name for o in sess.get_outputs()]
    assert names == ["logits"] + [f"present.{i}.{kv}" for i in range(c.n_layer) for kv in ("key", "value")]
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(c.n_layer) for kv in ("key", "value")]
    ids, mask = right_padded(c.vocab_size, lengths=(9, 9, 4))
    ours = dict(zip(names, sess.run(None, _cache_feeds(ids, mask, None, c.n_layer, c.n_head, d))))
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), use_cache=True)
    assert np.abs(ours["logits"] - out.logits.numpy())[mask == 1].max() < TOL
    # With past: the two full rows continue for two tokens, one token per call.
    ids2, mask2 = ids[:2], mask[:2]
    past = {n.replace("present.", "past_key_values."): v[:2] for n, v in ours.items() if n.startswith("present.")}
    with torch.no_grad():
        cache = ref(input_ids=torch.tensor(ids2), use_cache=True).past_key_values
    rng = np.random.default_rng(1)
    for step in range(2):
        nxt = rng.integers(1, c.vocab_size, (2, 1))
        mask2 = np.concatenate([mask2, np.ones((2, 1), np.int64)], 1)
        step_out = dict(zip(names, sess.run(None, _cache_feeds(nxt, mask2, past, c.n_layer, c.n_head, d))))
        with torch.no_grad():
            r = ref(input_ids=torch.tensor(nxt), past_key_values=cache, attention_mask=torch.tensor(mask2),
                    use_cache=True)
        cache = r.past_key_values
        assert step_out["logits"].shape == (2, 1, c.vocab_size)
        assert np.abs(step_out["logits"] - r.logits.numpy()).max() < TOL
        assert step_out["present.0.key"].shape == (2, c.n_head, ids2.shape[1] + step + 1, d)
        past = {n.replace("present.", "past_key_values."): v for n, v in step_out.items() if n.startswith("present.")}


def test_distilgpt2_shaped_config(tmp_path):
    """DistilGPT-2 is GPT-2 with 6 layers (here narrower): same family, same graph."""
    folder = make_tiny_gpt2(tmp_path / "distil", "lm", hidden=48, layers=6, heads=12, positions=96)
    result = export(folder, tmp_path / "onnx", fused=True)
    assert result.spec.family == "gpt2" and result.spec.num_layers == 6 and result.spec.max_position_embeddings == 96
    assert result.spec.task == "text-generation"
    ops = {n.op_type for n in onnx.load(result.onnx_path).graph.node}
    assert "MultiHeadAttention" in ops and "FastGelu" in ops and "Softmax" not in ops
    # one embedding table in the file: the LM head reads it transposed
    inits = [i.name for i in onnx.load(result.onnx_path).graph.initializer if len(i.dims) == 2 and 300 in i.dims]
    assert inits == ["transformer.wte.weight"]


def test_bad_checkpoints(tmp_path):
    import json
    import shutil

    folder = make_tiny_gpt2(tmp_path / "m", "lm")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["n_embd"] = 40
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidModelError, match="do not match config.json"):
        export(bad, tmp_path / "out")
    config["n_embd"], config["add_cross_attention"] = 32, True
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="cross-attention"):
        export(bad, tmp_path / "out2")
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(Exception) as e:
        export(pickled, tmp_path / "out3")
    assert "pytorch_model.bin" in str(e.value) and "Traceback" not in str(e.value)


def test_tokenizer_from_vocab_json_and_merges_txt(tmp_path):
    """GPT-2's own layout without tokenizer.json: byte-level BPE, no special tokens added, <|endoftext|> one token."""
    import transformers

    from app.core.tasks.tokenizer import load_tokenizer

    folder = make_tiny_gpt2(tmp_path / "m", "lm")
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    ours = load_tokenizer(folder)
    assert ours.source == "vocab.json+merges.txt" and ours.pad_token_id == 0
    for text in ("the movie was good", " Paris, France!", "café<|endoftext|>what"):
        assert ours.encode([text], truncation=None)[0].ids == reference(text)["input_ids"], text
