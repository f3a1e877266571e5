"""Tiny random models in Hugging Face layout, built with transformers (test-only) for parity tests.

`make_tiny_model(root, family, head)` writes config.json, model.safetensors and tokenizer files, exactly
what a Hub download gives, 2 layers and hidden 32. Weights are perturbed well away from their
initialisation (LayerNorm gains, biases, embeddings) so parity tests see non-trivial values.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra")
HEADS = ("base", "sequence-classification", "question-answering", "token-classification")

WORDS = ("the a an is was be good bad great terrible movie film story plot actor acting love hate fun boring "
         "what who where when why how paris france capital city river long short time year day new old "
         "and or but not very really quite so too of in on at to for with from by about as into like "
         "café naïve résumé 東京 日本 😀 http www com org happy sad , . ! ? ' \" - ( ) : ;").split()

_CLASS_PREFIX = {"bert": "Bert", "distilbert": "DistilBert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta",
                 "camembert": "Camembert", "electra": "Electra"}
_HEAD_SUFFIX = {"base": "Model", "sequence-classification": "ForSequenceClassification",
                "question-answering": "ForQuestionAnswering", "token-classification": "ForTokenClassification"}


def _wordpiece_tokenizer(folder: Path, family: str):
    import transformers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(w.lower() for w in WORDS))
    vocab += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cls = {"bert": transformers.BertTokenizerFast, "distilbert": transformers.DistilBertTokenizerFast,
           "electra": transformers.ElectraTokenizerFast}[family]
    tok = cls(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=64)
    tok.save_pretrained(folder)
    return tok


def _bpe_tokenizer(folder: Path):
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, len(WORDS), 7)]
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    tok = transformers.RobertaTokenizerFast(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                                            model_max_length=64)
    tok.save_pretrained(folder)
    return tok


def save_perturbed(folder: Path, class_name: str, config, *, seed: int, scale, dtype: str = "float32") -> Path:
    """Build transformers' `class_name` from `config` with a fixed seed, move every weight off its initialisation by
    Gaussian noise of std `scale(parameter name)` (initial weights hide layout bugs: zero biases, unit norms), and
    save it in Hugging Face layout."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale(name))
    model.config.architectures = [class_name]
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def make_tiny_model(root: Path, family: str, head: str, *, num_labels: int = 3, multi_label: bool = False,
                    seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int = 64,
                    max_positions: int = 72, dtype: str = "float32", **config_overrides) -> Path:
    """Build and save one tiny model; returns its folder."""
    import transformers

    folder = Path(root) / f"tiny-{family}-{head}" if not config_overrides and dtype == "float32" else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _wordpiece_tokenizer(folder, family) if family in ("bert", "distilbert", "electra") else _bpe_tokenizer(folder)
    vocab_size = len(tok)
    if head == "question-answering":
        num_labels = 2  # start and end logits
    labels = {i: name for i, name in enumerate(["NEGATIVE", "POSITIVE", "NEUTRAL", "MIXED", "OTHER"][:num_labels])}
    common = dict(vocab_size=vocab_size, max_position_embeddings=max_positions, id2label=labels,
                  label2id={v: k for k, v in labels.items()})
    if multi_label:
        common["problem_type"] = "multi_label_classification"
    if family == "distilbert":
        config = transformers.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=intermediate,
                                               pad_token_id=0, **common)
    else:
        extra = {}
        if family in ("roberta", "xlm-roberta", "camembert"):
            extra = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
        if family == "electra":
            extra = dict(embedding_size=hidden // 2)
        config_cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
                      "xlm-roberta": transformers.XLMRobertaConfig, "camembert": transformers.CamembertConfig,
                      "electra": transformers.ElectraConfig}[family]
        config = config_cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=intermediate, layer_norm_eps=1e-7, **extra, **common)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return save_perturbed(folder, _CLASS_PREFIX[family] + _HEAD_SUFFIX[head], config, seed=seed, dtype=dtype,
                          scale=lambda name: 0.3 if "LayerNorm" in name or "layer_norm" in name else 0.08)


def load_reference(folder: Path):
    """The transformers model for a folder (FP32, eval mode) — the reference our ONNX must match."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    model_cls = getattr(transformers, config.architectures[0])
    return model_cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
