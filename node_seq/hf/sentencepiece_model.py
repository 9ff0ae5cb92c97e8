"""Read a sentencepiece ``.model`` file with neither sentencepiece nor protobuf installed.

The file is a serialised ``ModelProto`` (sentencepiece's ``sentencepiece_model.proto``, proto2).
Rebuilding its encoder needs only the pieces, the normaliser and a few trainer flags, so those
few fields are read straight from the protobuf wire format; every other field is skipped.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Iterator

# Piece types (ModelProto.SentencePiece.Type) and model types (TrainerSpec.ModelType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


@dataclasses.dataclass(frozen=True)
class Piece:
    text: str
    score: float
    type: int = NORMAL


@dataclasses.dataclass(frozen=True)
class SentencePieceModel:
    """The parts of a sentencepiece model that decide how text becomes pieces (proto2 defaults)."""

    pieces: tuple[Piece, ...]
    model_type: str = "unigram"
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    normalizer: str = "nmt_nfkc"
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """``(field number, value)`` of one message: ints for varints, bytes for everything else."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, at = _varint(data, at)
        elif wire_type == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, at = data[at:at + width], at + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if at > len(data):
            raise ValueError("truncated protobuf message")
        yield number, value


def _piece(data: bytes) -> Piece:
    fields = dict(_fields(data))
    score = struct.unpack("<f", fields[2])[0] if 2 in fields else 0.0
    return Piece(fields.get(1, b"").decode("utf-8"), score, fields.get(3, NORMAL))


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """The pieces, normaliser and encoding flags of ``path``; ``ValueError`` if it is no such model."""
    pieces, trainer, normalizer = [], {}, {}
    try:
        for number, value in _fields(Path(path).read_bytes()):
            if number == 1:
                pieces.append(_piece(value))
            elif number == 2:
                trainer = dict(_fields(value))
            elif number == 3:
                normalizer = dict(_fields(value))
    except (ValueError, IndexError, UnicodeDecodeError, struct.error, TypeError) as error:
        raise ValueError(f"{path}: not a sentencepiece model ({error})") from None
    if not pieces:
        raise ValueError(f"{path}: not a sentencepiece model (no pieces)")
    return SentencePieceModel(
        pieces=tuple(pieces),
        model_type=MODEL_TYPES.get(trainer.get(3, 1), str(trainer.get(3))),
        treat_whitespace_as_suffix=bool(trainer.get(24, False)),
        byte_fallback=bool(trainer.get(35, False)),
        normalizer=normalizer.get(1, b"nmt_nfkc").decode("utf-8"),
        precompiled_charsmap=normalizer.get(2, b""),
        add_dummy_prefix=bool(normalizer.get(3, True)),
        remove_extra_whitespaces=bool(normalizer.get(4, True)),
        escape_whitespaces=bool(normalizer.get(5, True)),
    )


__all__ = ["Piece", "SentencePieceModel", "read_sentencepiece_model"]
