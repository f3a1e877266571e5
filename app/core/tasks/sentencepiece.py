"""A SentencePiece `spm.model` (DeBERTa-v2/v3 repos without tokenizer.json) → a `tokenizers` Unigram tokenizer,
without transformers or the sentencepiece library.

The model file is a protobuf (`sentencepiece_model.proto`); the few fields needed are read here from the wire
format by hand: pieces (text, score, type), the trainer's model type, unk id and byte fallback, and the normalizer's
precompiled character map. The tokenizer is then assembled as transformers' `DebertaV2Converter` assembles it:

  normalizer     [Lowercase when do_lower_case] ─ Strip ─ Precompiled(charsmap) ─ Replace(" {2,}" → " ")
  pre-tokenizer  [Punctuation when split_by_punct] ─ Metaspace("▁", always / first (legacy false) / never)
  model          Unigram(pieces and scores, unk id); CONTROL and USER_DEFINED pieces are added tokens
  post-processor [CLS] A [SEP] (B [SEP]), the special tokens from the tokenizer config

Only Unigram models are converted (DeBERTa's); BPE, word and char models are refused. Byte fallback is ignored,
as the converter does (DeBERTa-v3's model has none).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InvalidModelError, UnsupportedModelError

log = logging.getLogger(__name__)
CONTROL, USER_DEFINED = 3, 4  # SentencePiece piece types (NORMAL 1, UNKNOWN 2, UNUSED 5, BYTE 6)
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclass(frozen=True)
class SentencePieceModel:
    pieces: tuple[tuple[str, float, int], ...]  # (text, score, type) in id order
    model_type: int = 1
    unk_id: int = 0
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes):
    """(field number, value) of a protobuf message: int for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} in field {number}")
        if pos > len(data):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def read_model(path: Path) -> SentencePieceModel:
    """Parse `spm.model`; InvalidModelError when it is not a SentencePiece model."""
    try:
        data = Path(path).read_bytes()
        pieces, trainer, charsmap = [], {}, b""
        for number, value in _fields(data):
            if number == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
                piece = {1: b"", 2: struct.pack("<f", 0.0), 3: 1} | dict(_fields(value))
                pieces.append((piece[1].decode("utf-8"), struct.unpack("<f", piece[2])[0], int(piece[3])))
            elif number == 2:  # TrainerSpec
                trainer = dict(_fields(value))
            elif number == 3:  # NormalizerSpec {name = 1, precompiled_charsmap = 2, ...}
                charsmap = dict(_fields(value)).get(2, b"")
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as e:
        raise InvalidModelError(f"{path} is not a readable SentencePiece model ({e}). Re-download the model, or "
                                "download its tokenizer.json.") from e
    if not pieces:
        raise InvalidModelError(f"{path} has no pieces: it is not a SentencePiece model. Re-download the model.")
    return SentencePieceModel(pieces=tuple(pieces), model_type=int(trainer.get(3, 1)),
                              unk_id=_int32(int(trainer.get(40, 0))), byte_fallback=bool(trainer.get(35, 0)),
                              precompiled_charsmap=bytes(charsmap))


def tokenizer_from(folder: Path, config: dict, defaults: dict[str, str]):
    """DeBERTa-v2/v3's tokenizer from `folder/spm.model` and tokenizer_config.json (`config`)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from tokenizers.models import Unigram

    from app.core.tasks.tokenizer import _add_tokens, _require_id, _special_tokens

    path = Path(folder) / "spm.model"
    spm = read_model(path)
    if spm.model_type != 1:
        raise UnsupportedModelError(f"{path} is a SentencePiece {_MODEL_TYPES.get(spm.model_type, spm.model_type)} "
                                    "model; only Unigram models (DeBERTa's) are converted. Download the model's "
                                    "tokenizer.json.")
    if not 0 <= spm.unk_id < len(spm.pieces):
        raise InvalidModelError(f"{path}: the unknown-token id {spm.unk_id} is outside its {len(spm.pieces)} pieces.")
    if spm.byte_fallback:
        log.warning("%s uses byte fallback, which the conversion ignores (as transformers' converter does): "
                    "characters outside the vocabulary become [UNK]", path)
    tok = Tokenizer(Unigram([(text, score) for text, score, _ in spm.pieces], unk_id=spm.unk_id, byte_fallback=False))
    tok.add_tokens([AddedToken(text, normalized=False, special=kind == CONTROL)
                    for text, _, kind in spm.pieces if kind in (CONTROL, USER_DEFINED)])
    steps = [normalizers.Lowercase()] if config.get("do_lower_case") else []
    steps.append(normalizers.Strip())
    if spm.precompiled_charsmap:  # DeBERTa-v3's nmt_nfkc map, read by the tokenizers library itself
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    if config.get("add_prefix_space", True):
        scheme = "always" if config.get("legacy", True) else "first"
    else:
        scheme = "never"
    pre = [pre_tokenizers.Punctuation(behavior="isolated")] if config.get("split_by_punct") else []
    pre.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    specials = _special_tokens(folder, config, defaults)
    _add_tokens(tok, folder, config, specials)
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, _require_id(tok, cls, "CLS", folder)), (sep, _require_id(tok, sep, "SEP", folder))])
    return tok
