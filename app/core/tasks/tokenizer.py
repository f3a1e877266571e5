"""The model's own tokenizer, rebuilt with the `tokenizers` library (no transformers at run time).

`load_tokenizer(folder)` reads `tokenizer.json` when the folder has one; otherwise it rebuilds the tokenizer
from `vocab.txt` + `tokenizer_config.json` (BERT WordPiece) or `vocab.json` + `merges.txt` (RoBERTa
byte-level BPE), the way transformers' BertTokenizer / RobertaTokenizer do. The maximum length comes from the
model (`max_position_embeddings`, less the RoBERTa position offset; `model_max_length` when smaller), never
from the truncation a saved tokenizer.json happens to carry: every call sets truncation and padding itself.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece

from app.core.errors import InputError, InvalidModelError, UnsupportedModelError
from app.core.export.families.roberta import ROBERTA_SPECIAL_TOKENS
from app.core.spec import ModelSpec, load_spec

log = logging.getLogger(__name__)

# transformers stores int(1e30) as model_max_length when a tokenizer sets none; such values mean "unknown".
_SANE_MAX_LENGTH = 1_000_000
_SPECIAL_KEYS = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")
Truncation = Literal["longest_first", "only_first", "only_second"]


@dataclass(frozen=True)
class EncodedBatch:
    """Padded model inputs for a batch."""

    input_ids: np.ndarray  # (batch, seq) int64
    attention_mask: np.ndarray  # (batch, seq) int64
    token_type_ids: np.ndarray  # (batch, seq) int64

    def feeds(self, input_names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
        """Only the inputs the ONNX session declares (RoBERTa/DistilBERT graphs have no token_type_ids)."""
        arrays = {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                  "token_type_ids": self.token_type_ids}
        missing = [n for n in input_names if n not in arrays]
        if missing:
            raise InvalidModelError(f"The ONNX model asks for inputs {missing} that a text model does not have; "
                                    "re-export it with Pocket NLP.")
        return {n: arrays[n] for n in input_names}


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus what the model says about lengths and special tokens.

    Thread-safe: truncation and padding are set under a lock for each call.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_length: int, pad_token_id: int,
                 cls_token_id: int | None, source: str):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.cls_token_id = cls_token_id
        self.source = source  # "tokenizer.json", "vocab.txt" or "vocab.json+merges.txt"
        self._lock = threading.Lock()
        tokenizer.no_truncation()
        tokenizer.no_padding()

    def __repr__(self) -> str:
        return f"TextTokenizer(source={self.source!r}, max_length={self.max_length}, vocab={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str], pairs: list[str] | None = None, *, truncation: Truncation | None = "longest_first",
               max_length: int | None = None, stride: int = 0) -> list[Encoding]:
        """Encode texts (and pairs) like transformers' `tokenizer(texts, pairs, truncation=..., max_length=...)`.

        Nothing is padded; with truncation each encoding keeps its `overflowing` windows (`stride` overlap).
        An empty pair counts as no pair, as in transformers.
        """
        max_length = self.max_length if max_length is None else max_length
        if pairs is not None and len(pairs) != len(texts):
            raise InputError(f"Got {len(texts)} texts but {len(pairs)} text pairs; give one pair per text.")
        inputs = list(texts) if pairs is None else [(t, p) if p else t for t, p in zip(texts, pairs)]
        with self._lock:
            try:
                if truncation is None:
                    self.tokenizer.no_truncation()
                else:
                    self.tokenizer.enable_truncation(max_length, stride=stride, strategy=truncation)
                return self.tokenizer.encode_batch(inputs, add_special_tokens=True)
            except Exception as e:  # tokenizers raises plain Exception subclasses from Rust
                raise InputError(f"The text cannot be tokenized within {max_length} tokens ({e}). Shorten the "
                                 "question or first text.") from e
            finally:
                self.tokenizer.no_truncation()

    def batch(self, texts: list[str], pairs: list[str] | None = None, **kwargs) -> tuple[EncodedBatch, list[Encoding]]:
        """Padded int64 arrays for a batch; returns (batch, encodings) so callers can inspect overflow."""
        encodings = self.encode(texts, pairs, **kwargs)
        return arrays_from(encodings, self.pad_token_id), encodings


def arrays_from(encodings: list[Encoding], pad_token_id: int) -> EncodedBatch:
    """Stack encodings into (batch, seq) int64 arrays, right-padding any that are shorter."""
    length = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), length), pad_token_id, dtype=np.int64)  # (batch, seq)
    mask = np.zeros((len(encodings), length), dtype=np.int64)  # (batch, seq)
    types = np.zeros((len(encodings), length), dtype=np.int64)  # (batch, seq)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
    return EncodedBatch(ids, mask, types)


def model_max_length(spec: ModelSpec, tokenizer_config: dict) -> int:
    """The longest input the model can take: its position table (less the RoBERTa offset), or the tokenizer's
    `model_max_length` when that is smaller and a real number."""
    limit = spec.max_sequence_length
    declared = tokenizer_config.get("model_max_length")
    if isinstance(declared, (int, float)) and not isinstance(declared, bool) and 0 < declared < _SANE_MAX_LENGTH:
        limit = min(limit, int(declared))
    if limit < 4:
        raise InvalidModelError(f"The model's maximum length ({limit} tokens) is too small to hold any text.")
    return limit


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidModelError(f"{path} cannot be read as JSON ({e}). Re-download or re-export the model.") from e
    if not isinstance(data, dict):
        raise InvalidModelError(f"{path} must hold a JSON object. Re-download or re-export the model.")
    return data


def _token_text(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_tokens(folder: Path, config: dict, defaults: dict[str, str]) -> dict[str, str]:
    """Special token strings: tokenizer_config.json, then special_tokens_map.json, then the family's defaults."""
    tokens = dict(defaults)
    stm = folder / "special_tokens_map.json"
    for source in ([_read_json(stm)] if stm.is_file() else []) + [config]:
        for key in _SPECIAL_KEYS:
            text = _token_text(source.get(key))
            if text is not None:
                tokens[key] = text
    return tokens


def _add_tokens(tokenizer: Tokenizer, folder: Path, config: dict, specials: dict[str, str]) -> None:
    """Register special and added tokens as transformers does, so e.g. '[SEP]' in a text stays one token."""
    decoder = config.get("added_tokens_decoder")
    declared: list[tuple[int, AddedToken]] = []
    if isinstance(decoder, dict):
        for key, tok in decoder.items():
            if isinstance(tok, dict) and isinstance(tok.get("content"), str):
                declared.append((int(key), AddedToken(tok["content"], single_word=bool(tok.get("single_word")),
                                                      lstrip=bool(tok.get("lstrip")), rstrip=bool(tok.get("rstrip")),
                                                      normalized=bool(tok.get("normalized", not tok.get("special"))),
                                                      special=bool(tok.get("special")))))
    known = {t.content for _, t in declared}
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    added_json = folder / "added_tokens.json"
    if added_json.is_file():
        for content, idx in sorted(_read_json(added_json).items(), key=lambda kv: kv[1]):
            if content not in known and content not in vocab:
                special = content in specials.values()  # e.g. DeBERTa-v3's [MASK], listed only there
                declared.append((int(idx), AddedToken(content, normalized=not special, special=special)))
                known.add(content)
    for content in dict.fromkeys(specials.values()):
        if content not in known:
            declared.append((vocab.get(content, -1), AddedToken(content, normalized=False, special=True)))
    declared.sort(key=lambda it: it[0])
    special = [t for _, t in declared if t.special]
    plain = [t for _, t in declared if not t.special]
    if special:
        tokenizer.add_special_tokens(special)
    if plain:
        tokenizer.add_tokens(plain)


def _require_id(tokenizer: Tokenizer, token: str, what: str, folder: Path) -> int:
    idx = tokenizer.token_to_id(token)
    if idx is None:
        raise InvalidModelError(f"{folder}: the {what} token {token!r} is not in the vocabulary. Re-download the "
                                "model's tokenizer files.")
    return idx


def _wordpiece_from(folder: Path, config: dict, family) -> Tokenizer:
    """BERT/DistilBERT/ELECTRA/MPNet: vocab.txt + tokenizer_config.json, as transformers' BertTokenizer (and
    MPNetTokenizer, whose pairs put two separators between the texts) builds it."""
    vocab: dict[str, int] = {}
    try:
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"{folder / 'vocab.txt'} cannot be read ({e}). Re-download the model.") from e
    if lines and lines[-1] == "":
        lines.pop()
    for index, token in enumerate(lines):
        vocab[token.rstrip("\r")] = index
    specials = _special_tokens(folder, config, family.special_tokens)
    lowercase = bool(config.get("do_lower_case", True))
    strip_accents = config.get("strip_accents")
    tok = Tokenizer(WordPiece(vocab, unk_token=specials["unk_token"],
                              max_input_chars_per_word=int(config.get("max_input_chars_per_word", 100))))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=None if strip_accents is None else bool(strip_accents), lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    _add_tokens(tok, folder, config, specials)
    cls, sep = specials["cls_token"], specials["sep_token"]
    cls_id, sep_id = _require_id(tok, cls, "CLS", folder), _require_id(tok, sep, "SEP", folder)
    pair = (f"{cls}:0 $A:0 {sep}:0 {sep}:0 $B:0 {sep}:0" if family.pair_sep_twice
            else f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1")
    tok.post_processor = processors.TemplateProcessing(single=f"{cls}:0 $A:0 {sep}:0", pair=pair,
                                                       special_tokens=[(cls, cls_id), (sep, sep_id)])
    return tok


def _bpe_from(folder: Path, config: dict, defaults: dict[str, str] = ROBERTA_SPECIAL_TOKENS) -> Tokenizer:
    """RoBERTa family: byte-level BPE from vocab.json + merges.txt, as transformers' RobertaTokenizer builds it;
    GPT-2 (no SEP/CLS in its `defaults`): the same BPE without a post-processor, as GPT2Tokenizer adds no tokens."""
    vocab = _read_json(folder / "vocab.json")
    try:
        merge_lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidModelError(f"{folder / 'merges.txt'} cannot be read ({e}). Re-download the model.") from e
    merges = []
    for line in merge_lines:
        if not line.strip() or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise InvalidModelError(f"{folder / 'merges.txt'} has a malformed merge {line!r}. Re-download the model.")
        merges.append((parts[0], parts[1]))
    specials = _special_tokens(folder, config, defaults)
    add_prefix_space = bool(config.get("add_prefix_space", False))
    trim_offsets = bool(config.get("trim_offsets", True))
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    _add_tokens(tok, folder, config, specials)
    if "sep_token" not in specials:
        return tok
    sep, cls = specials["sep_token"], specials["cls_token"]
    tok.post_processor = processors.RobertaProcessing(
        (sep, _require_id(tok, sep, "SEP", folder)), (cls, _require_id(tok, cls, "CLS", folder)),
        trim_offsets=trim_offsets, add_prefix_space=add_prefix_space)
    return tok


def load_tokenizer(folder: Path, spec: ModelSpec | None = None) -> TextTokenizer:
    """The tokenizer of a model folder (a Hub download or an exported fp32/int8 folder)."""
    folder = Path(folder)
    spec = spec or load_spec(folder)
    config_path = folder / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # tokenizers raises a bare Exception for bad files
            raise InvalidModelError(f"{folder / 'tokenizer.json'} is not a valid tokenizer ({e}). "
                                    "Re-download or re-export the model.") from e
        source = "tokenizer.json"
    elif (folder / "vocab.txt").is_file():
        tok, source = _wordpiece_from(folder, config, spec.family_class), "vocab.txt"
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        family_tokens = spec.family_class.special_tokens  # GPT-2's have no SEP: no RoBERTa post-processor
        tok = _bpe_from(folder, config, ROBERTA_SPECIAL_TOKENS if "sep_token" in family_tokens else family_tokens)
        source = "vocab.json+merges.txt"
    elif (folder / "spm.model").is_file():  # DeBERTa-v2/v3's SentencePiece Unigram model
        from app.core.tasks.sentencepiece import tokenizer_from

        tok, source = tokenizer_from(folder, config, spec.family_class.special_tokens), "spm.model"
    else:
        sentencepiece = [p.name for p in folder.glob("*.model")]
        hint = (f" It has a SentencePiece model ({', '.join(sentencepiece)}), which Pocket NLP reads only through "
                "tokenizer.json; download the model's tokenizer.json too." if sentencepiece else "")
        raise UnsupportedModelError(f"{folder} has no tokenizer files (tokenizer.json, vocab.txt, or vocab.json + "
                                    f"merges.txt).{hint}")
    specials = _special_tokens(folder, config, spec.family_class.special_tokens)
    pad_id = tok.token_to_id(specials["pad_token"])
    if pad_id is None:
        pad_id = spec.pad_token_id
    cls_id = tok.token_to_id(specials["cls_token"]) if "cls_token" in specials else None  # GPT-2 has none
    tokenizer = TextTokenizer(tok, max_length=model_max_length(spec, config), pad_token_id=pad_id,
                              cls_token_id=cls_id, source=source)
    log.debug("loaded %r from %s", tokenizer, folder)
    return tokenizer
