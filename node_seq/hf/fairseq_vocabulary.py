"""Backend tokenizers that give the ids ``fairseq-preprocess`` wrote, rebuilt from a fairseq dictionary.

fairseq reads a line as words split at whitespace (``tokenize_line``), looks each word up in its
dictionary (``<unk>`` when missing) and appends ``</s>``; whatever made the words was the user's
own preprocessing. Three kinds of preprocessing are rebuilt here with the ``tokenizers`` library,
so the HF tokenizer takes the text that preprocessing took and needs none of the user's files:

* none, for pre-tokenised (or already BPE'd) text: a word-level model over the dictionary, and
  decoding joins words with spaces, as ``fairseq-generate`` prints them;
* sentencepiece (``spm_encode`` into pieces): its unigram model and normaliser, read from the
  ``.model`` file; decoding as ``--post-process sentencepiece``;
* subword-nmt (``apply_bpe.py -c CODES``, ``@@ `` between the pieces of a word): a BPE over the
  codes' merges; decoding as ``--post-process subword_nmt``.

A model entry that is not a dictionary word gets an id past the dictionary and a dictionary id to
read as (``<unk>`` unless ``aliases`` says otherwise). sentencepiece writes a run of characters it
does not cover as it is, and fairseq looked that run up; the unigram model reads it as one
``<unk>`` whose token is the run, and ``uncovered`` gives the runs the dictionary holds their ids.
What cannot be rebuilt exactly raises :class:`VocabularyError` when the tokenizer is built:

* sentencepiece: models other than ``unigram``, ``byte_fallback``, ``treat_whitespace_as_suffix``,
  user-defined or byte pieces, pieces holding whitespace, and dictionary words that this model
  cannot have written (neither a piece nor made only of characters it does not cover);
* subword-nmt: codes without the ``#version: 0.2`` header (older codes end words with a symbol of
  their own), and codes or dictionaries whose symbols collide with the special words.

Known differences that no build-time check can see: the literal words ``<s>``, ``<pad>``, ``</s>``
or ``<unk>`` inside raw text for sentencepiece (the unigram model can read them as the specials);
for subword-nmt, whitespace other than spaces inside a line (subword-nmt splits words at spaces
only) and the ``--vocabulary``/``--glossaries``/``--dropout`` options of ``apply_bpe.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ..text.tokenizer import SPECIALS
from .sentencepiece_model import BYTE, NORMAL, USER_DEFINED, SentencePieceModel

END_OF_WORD = "</w>"  # subword-nmt's mark on the last symbol of a word while merging
CONTINUATION = "@@"  # subword-nmt's mark on every piece but a word's last
PADDING_WORD = "madeupword"  # fairseq pads dictionaries to a multiple of 8 with madeupword0000, ...


class VocabularyError(ValueError):
    """A dictionary and a subword model that no fast tokenizer reproduces exactly; the message says why."""


@dataclasses.dataclass
class FairseqVocabulary:
    """A backend tokenizer whose ids below ``dictionary_size`` are the fairseq dictionary's.

    Ids past the dictionary are model entries fairseq never saw; each reads as ``<unk>`` or, when
    listed in ``aliases``, as the dictionary id given there. An ``<unk>`` whose token is a key of
    ``uncovered`` (text the subword model does not cover, which fairseq looked up) reads as its id.
    """

    tokenizer: Tokenizer
    dictionary_size: int
    aliases: dict[int, int] = dataclasses.field(default_factory=dict)
    uncovered: dict[str, int] = dataclasses.field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def whitespace_class() -> str:
    """A regex class of the characters Python's ``str.split()`` splits at (fairseq's ``tokenize_line``)."""
    return "[" + "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()) + "]"


def _specials_added(tokenizer: Tokenizer) -> Tokenizer:
    """Mark the dictionary's first four words special (ids 0-3: each is in the model's vocabulary)."""
    tokenizer.add_special_tokens([AddedToken(word, special=True, normalized=False) for word in SPECIALS])
    if [tokenizer.token_to_id(word) for word in SPECIALS] != list(range(len(SPECIALS))):
        raise VocabularyError(f"the special words {SPECIALS} must have the ids 0-3")
    return tokenizer


def _check_specials(symbols: list[str], where: str) -> None:
    if symbols[: len(SPECIALS)] != SPECIALS:
        raise VocabularyError(f"{where}: a fairseq dictionary starts with {SPECIALS}, got {symbols[:len(SPECIALS)]}")


# ----------------------------------------------------------------------------------------------
# pre-tokenised text


def word_level(symbols: list[str], where: str = "dictionary") -> FairseqVocabulary:
    """One id per whitespace-separated word: the dictionary's, or ``<unk>``."""
    _check_specials(symbols, where)
    tokenizer = Tokenizer(models.WordLevel({word: index for index, word in enumerate(symbols)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(whitespace_class() + "+"), behavior="removed")
    # no decoder: tokenizers joins the words with single spaces, as fairseq's Dictionary.string
    return FairseqVocabulary(_specials_added(tokenizer), len(symbols))


# ----------------------------------------------------------------------------------------------
# sentencepiece


def _check_sentencepiece(model: SentencePieceModel, where: str) -> None:
    if model.model_type != "unigram":
        raise VocabularyError(f"{where}: a {model.model_type!r} sentencepiece model; only 'unigram' models (the "
                              "default of spm_train) convert exactly")
    for flag in ("byte_fallback", "treat_whitespace_as_suffix"):
        if getattr(model, flag):
            raise VocabularyError(f"{where}: trained with --{flag}, which the converted tokenizer cannot reproduce")
    if not model.escape_whitespaces:
        raise VocabularyError(f"{where}: trained without escape_whitespaces, which the converted tokenizer cannot "
                              "reproduce")
    odd = [piece.text for piece in model.pieces if piece.type in (USER_DEFINED, BYTE)]
    if odd:
        raise VocabularyError(f"{where}: user-defined or byte pieces ({', '.join(map(repr, odd[:5]))}) are not "
                              "supported")
    spaced = [piece.text for piece in model.pieces if piece.type == NORMAL and any(c.isspace() for c in piece.text)]
    if spaced:
        raise VocabularyError(f"{where}: pieces holding whitespace ({', '.join(map(repr, spaced[:5]))}); fairseq "
                              "split those pieces at it, which the converted tokenizer cannot reproduce")


def _sentencepiece_normalizer(model: SentencePieceModel) -> normalizers.Normalizer:
    """sentencepiece's normalisation: charsmap, extra spaces removed, ``▁`` prefix, spaces as ``▁``.

    sentencepiece drops leading spaces and collapses runs of them as it reads, and drops trailing
    ones once they are ``▁``, so a ``▁`` already in the text counts only at the end.
    """
    steps = [normalizers.Precompiled(model.precompiled_charsmap)] if model.precompiled_charsmap else []
    if model.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A +"), "")]
    if model.add_dummy_prefix:
        steps.append(normalizers.Prepend(" "))
    steps.append(normalizers.Replace(" ", "\u2581"))
    if model.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex("\u2581+\\z"), ""))
    return normalizers.Sequence(steps)


def sentencepiece(model: SentencePieceModel, symbols: list[str], where: str = "dictionary") -> FairseqVocabulary:
    """sentencepiece's unigram segmentation, each piece then looked up in the dictionary.

    The unigram model scores every piece as sentencepiece does (the unknown-character penalty
    included) and fuses a run of characters it does not cover into one ``<unk>``, as sentencepiece
    does. Dictionary words that are no piece (fairseq's ``madeupword`` padding, uncovered runs)
    stay in the vocabulary for their ids, spelt with a space that normalised text never holds, so
    the model never picks them; the four specials must keep their spelling.
    """
    _check_specials(symbols, where)
    _check_sentencepiece(model, where)
    scores = {piece.text: piece.score for piece in model.pieces if piece.type == NORMAL}
    covered = {text for text in scores if len(text) == 1}
    strays = [word for word in symbols[len(SPECIALS):] if word not in scores and not word.startswith(PADDING_WORD)]
    impossible = [word for word in strays if covered.intersection(word)]
    if impossible:
        raise VocabularyError(
            f"{where}: {len(impossible)} words are no piece of the sentencepiece model and hold characters it covers "
            f"(e.g. {', '.join(map(repr, impossible[:5]))}), so it cannot have written them; is this the model the "
            "data was encoded with?")
    vocab = [(word, 0.0) for word in SPECIALS]
    vocab += [(word, scores[word]) if word in scores else (word + " ", 0.0) for word in symbols[len(SPECIALS):]]
    known = set(symbols)
    vocab += [(piece, score) for piece, score in scores.items() if piece not in known]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIALS.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = _sentencepiece_normalizer(model)
    # Whitespace the normaliser leaves (not with nmt_nfkc) is in no piece: sentencepiece puts it in an
    # unknown run, which fairseq splits at that whitespace; splitting first gives the same words.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(whitespace_class() + "+"), behavior="removed")
    edges = whitespace_class() + "+"
    tokenizer.decoder = decoders.Sequence([  # fairseq: .replace(" ", "").replace("\u2581", " ").strip()
        decoders.Replace(" ", ""), decoders.Replace("\u2581", " "), decoders.Fuse(),
        decoders.Replace(Regex(rf"\A{edges}|{edges}\z"), ""),
    ])
    uncovered = {word: symbols.index(word) for word in strays}
    return FairseqVocabulary(_specials_added(tokenizer), len(symbols), uncovered=uncovered)


# ----------------------------------------------------------------------------------------------
# subword-nmt


def read_bpe_codes(path: str | Path) -> list[tuple[str, str]]:
    """The merges of a subword-nmt codes file, in priority order (a repeated merge keeps its first rank)."""
    lines = Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n")
    if not lines[0].startswith("#version:") or lines[0].split()[-1] != "0.2":
        raise VocabularyError(f"{path}: expected subword-nmt codes starting with '#version: 0.2', got "
                              f"{lines[0][:40]!r} (older codes end words with a symbol of their own)")
    merges = {}
    for number, line in enumerate(lines[1:], 2):
        pair = tuple(line.strip("\r\n ").split(" "))
        if len(pair) != 2:
            raise VocabularyError(f"{path}:{number}: a merge is two symbols separated by a space, got {line!r}")
        merges.setdefault(pair, len(merges))
    return list(merges)


def _symbol(word: str) -> str:
    """The BPE symbol a dictionary word comes from: ``ab@@`` from ``ab`` inside a word, ``ab`` from ``ab</w>``."""
    return word[: -len(CONTINUATION)] if word.endswith(CONTINUATION) else word + END_OF_WORD


def _word(symbol: str) -> str:
    """The piece subword-nmt writes for a BPE symbol (the inverse of :func:`_symbol`)."""
    return symbol[: -len(END_OF_WORD)] if symbol.endswith(END_OF_WORD) else symbol + CONTINUATION


def subword_nmt(merges: list[tuple[str, str]], symbols: list[str], where: str = "dictionary") -> FairseqVocabulary:
    """subword-nmt's segmentation (merges by rank, ``</w>`` on a word's last symbol), pieces looked up.

    The BPE works on symbols; a dictionary word has the id of the symbol it is written from, and
    every other symbol the merges can make reads as the word subword-nmt would write for it.
    """
    _check_specials(symbols, where)
    vocab = {word: index for index, word in enumerate(SPECIALS)}
    for index, word in enumerate(symbols[len(SPECIALS):], len(SPECIALS)):
        symbol = _symbol(word)
        if symbol in vocab:
            raise VocabularyError(f"{where}: the words {symbols[vocab[symbol]]!r} and {word!r} are the same BPE "
                                  f"symbol {symbol!r}")
        vocab[symbol] = index
    for pair in merges:
        for symbol in (*pair, "".join(pair)):
            if symbol in SPECIALS:
                raise VocabularyError(f"{where}: the BPE codes make the special word {symbol!r}")
            vocab.setdefault(symbol, len(vocab))
    words = {word: index for index, word in enumerate(symbols)}
    aliases = {index: words[_word(symbol)] for symbol, index in vocab.items()
               if index >= len(symbols) and _word(symbol) in words}
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", end_of_word_suffix=END_OF_WORD,
                                     fuse_unk=False, ignore_merges=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(whitespace_class() + "+"), behavior="removed")
    tokenizer.decoder = decoders.Sequence([  # fairseq: (" ".join(words) + " ").replace("@@ ", "").rstrip()
        decoders.BPEDecoder(suffix=END_OF_WORD), decoders.Fuse(),
        decoders.Replace(Regex(whitespace_class() + r"+\z"), ""),
    ])
    return FairseqVocabulary(_specials_added(tokenizer), len(symbols), aliases)


__all__ = ["FairseqVocabulary", "VocabularyError", "read_bpe_codes", "sentencepiece", "subword_nmt", "word_level"]
