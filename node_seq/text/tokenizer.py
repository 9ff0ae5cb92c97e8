"""The one subword tokenizer of a node-seq experiment, used by fairseq data and HF models alike.

A BPE model (HuggingFace ``tokenizers``) that segments like sentencepiece's BPE: word boundaries are
marked with ``▁`` and punctuation is split from words before merging (``"Hut,"`` is ``▁Hut ,``),
so no piece is spent on a word-plus-comma. fairseq's ``--post-process sentencepiece`` turns generated
pieces back into text, and the same ``tokenizer.json`` becomes the HF fast tokenizer of a converted
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # fairseq's dictionary puts these first, in this order


def train_tokenizer(files: Iterable[str | Path], *, vocab_size: int) -> Tokenizer:
    """Learn a joint BPE over ``files`` (one sentence per line)."""
    if vocab_size < len(SPECIALS) + 1:
        raise ValueError(f"vocab_size must be > {len(SPECIALS)}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    # Punctuation pieces carry no ``▁``, so joining pieces and turning ``▁`` into spaces still
    # restores the text exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tokenizer.train([str(f) for f in files], trainer)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode_lines(tokenizer: Tokenizer, lines: Iterable[str]) -> list[str]:
    """Each line as space-separated pieces (what fairseq-preprocess reads)."""
    batch = [line.rstrip("\n") for line in lines]
    return [" ".join(enc.tokens) for enc in tokenizer.encode_batch(batch, add_special_tokens=False)]


def encode_file(tokenizer: Tokenizer, src: str | Path, dst: str | Path) -> int:
    lines = Path(src).read_text(encoding="utf-8").splitlines()
    Path(dst).write_text("".join(line + "\n" for line in encode_lines(tokenizer, lines)), encoding="utf-8")
    return len(lines)


def detokenize(pieces: str) -> str:
    """Undo :func:`encode_lines` (the same rule as fairseq's ``--post-process sentencepiece``)."""
    return pieces.replace(" ", "").replace("\u2581", " ").strip()
