"""The HF fast tokenizer of node-seq: the experiment's BPE (``node_seq.text.tokenizer``), ``</s>`` appended.

Three numberings:

* the BPE's own ids (a model trained the HF way, ``node_seq.hf.cli.train``);
* a fairseq dictionary's ids (a converted fairseq model). fairseq reads the BPE's pieces as strings
  and looks each up in its dictionary, so a piece the dictionary lacks (one the BPE learnt but that
  never ended a word of the training data, single letters included) becomes ``<unk>``. The BPE of
  ``tokenizers`` keys its merges by token id, so those pieces cannot all share the ``<unk>`` id
  inside it; they keep ids of their own past the dictionary (``>= dictionary_size``) and
  :class:`NodeTransformerTokenizerFast` maps those to ``<unk>`` on the way out;
* a converted fairseq model's own preprocessing (:mod:`.fairseq_vocabulary`): pre-tokenised
  words, sentencepiece or subword-nmt over its dictionaries, built by :func:`build_fairseq_tokenizer`.

A model with separate source and target dictionaries has two backends: ``tokenizer.json`` for
sources and ``target_tokenizer.json`` for targets. Targets (``text_target=``, labels) are encoded
with the second, and ``decode`` reads model outputs with it too (``use_source_tokenizer=True``
reads source ids), the way Marian's tokenizer treats its two vocabularies.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from ..text.tokenizer import SPECIALS
from .fairseq_vocabulary import FairseqVocabulary
from .remote_code import SavesCodeBundle

TARGET_TOKENIZER_FILE = "target_tokenizer.json"


class NodeTransformerTokenizerFast(SavesCodeBundle, PreTrainedTokenizerFast):
    """``PreTrainedTokenizerFast`` giving fairseq dictionary ids, with an optional target-side backend.

    Ids at or past a side's dictionary size are model entries fairseq never saw; they come out as
    that side's alias (``dictionary_aliases``/``target_dictionary_aliases``), else ``<unk>``. An
    ``<unk>`` whose token is in ``uncovered_words``/``target_uncovered_words`` (text sentencepiece
    does not cover, which fairseq looked up) comes out as that word's id.
    """

    # No __init__ of its own: transformers would then rebuild the backend from vocab and merges alone,
    # losing the normalizer, pre-tokenizer and decoder of tokenizer.json.
    vocab_files_names = {**PreTrainedTokenizerFast.vocab_files_names, "target_tokenizer_file": TARGET_TOKENIZER_FILE}

    @property
    def dictionary_size(self) -> int | None:
        """Size of the fairseq dictionary (the ``dictionary_size`` argument, kept in tokenizer_config.json)."""
        return self.init_kwargs.get("dictionary_size")

    @property
    def target_backend(self) -> Tokenizer | None:
        """The backend of targets when the target dictionary is not the source's (``target_tokenizer.json``)."""
        if getattr(self, "_target_backend", None) is None and self.init_kwargs.get("target_tokenizer_file"):
            self._target_backend = Tokenizer.from_file(self.init_kwargs["target_tokenizer_file"])
        return getattr(self, "_target_backend", None)

    def _side(self) -> str:
        return "target" if getattr(self, "_on_target", False) and self.target_backend is not None else "source"

    def _dictionary_map(self) -> tuple[int | None, dict[int, int], dict[str, int]]:
        prefix = "target_" if self._side() == "target" else ""
        size = self.init_kwargs.get(f"{prefix}dictionary_size")
        aliases = self.init_kwargs.get(f"{prefix}dictionary_aliases") or {}
        uncovered = self.init_kwargs.get(f"{prefix}uncovered_words") or {}
        return size, {int(index): word for index, word in aliases.items()}, uncovered  # JSON keys are strings

    def _to_dictionary(self, ids: list[int], tokens: list[str] | None = None) -> list[int]:
        size, aliases, uncovered = self._dictionary_map()
        if size is None:
            return ids
        unk = self._tokenizer.token_to_id(str(self.unk_token))
        out = []
        for position, index in enumerate(ids):
            if index >= size:
                index = aliases.get(index, unk)
            elif index == unk and uncovered and tokens is not None:
                index = uncovered.get(tokens[position], unk)
            out.append(index)
        return out

    def _use(self, target: bool) -> None:
        if self.target_backend is None:
            return
        if not hasattr(self, "_source_backend"):
            self._source_backend = self._tokenizer
        self._on_target = target
        self._tokenizer = self.target_backend if target else self._source_backend
        self._tokenizer.encode_special_tokens = self.split_special_tokens  # a runtime flag: not in the JSON

    def _switch_to_target_mode(self) -> None:
        self._use(target=True)

    def _switch_to_input_mode(self) -> None:
        self._use(target=False)

    @contextlib.contextmanager
    def _reading(self, target: bool):
        before = self._side() == "target"
        self._use(target)
        try:
            yield
        finally:
            self._use(before)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                use_source_tokenizer: bool = False, **kwargs) -> str:
        """Model outputs are target ids: read with the target backend unless ``use_source_tokenizer``."""
        with self._reading(target=not use_source_tokenizer):
            return super()._decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)

    def _convert_encoding(self, encoding, *args, **kwargs):
        encoded, encodings = super()._convert_encoding(encoding, *args, **kwargs)
        encoded["input_ids"] = [self._to_dictionary(ids, each.tokens)
                                for ids, each in zip(encoded["input_ids"], encodings)]
        return encoded, encodings

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        return self._to_dictionary([super()._convert_token_to_id_with_added_voc(token)], [token])[0]

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        if not self._dictionary_map()[2]:
            return self._to_dictionary(super()._encode_without_added_tokens(text))
        encoding = self._tokenizer.encode(text, add_special_tokens=False)  # split_special_tokens: no added tokens
        return self._to_dictionary(encoding.ids, encoding.tokens)

    @property
    def vocab_size(self) -> int:
        """The model's (source) vocabulary: the fairseq dictionary (entries past it only spell its words)."""
        return self.dictionary_size if self.dictionary_size is not None else super().vocab_size

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        with self._reading(target=False):
            file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        if self.target_backend is not None:
            path = os.path.join(str(save_directory), (filename_prefix + "-" if filename_prefix else "")
                                + TARGET_TOKENIZER_FILE)
            self.target_backend.save(path)
            file_names = file_names + (path,)
        return file_names


def read_fairseq_dictionary(path: str | Path) -> list[str]:
    """The symbols of a fairseq ``dict.txt`` in id order (the four specials first, as fairseq adds them)."""
    symbols = list(SPECIALS)
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rstrip().split(" ")
        overwrite = fields[-1] == "#fairseq:overwrite"
        word = " ".join(fields[:-2] if overwrite else fields[:-1])
        if word in symbols and not overwrite:
            raise ValueError(f"{path}:{number}: duplicate word {word!r} in the dictionary")
        if word not in symbols:
            symbols.append(word)
    return symbols


def eos_appended(eos: int) -> processors.TemplateProcessing:
    """fairseq appends ``</s>`` to every source and target sentence."""
    return processors.TemplateProcessing(single="$A:0 </s>:0", pair="$A:0 </s>:0 $B:0 </s>:0",
                                         special_tokens=[("</s>", eos)])


def eos_prepended(eos: int) -> processors.TemplateProcessing:
    """A fairseq language model reads every sentence after ``</s>`` (its beginning-of-sentence)."""
    return processors.TemplateProcessing(single="</s>:0 $A:0", pair="</s>:0 $A:0 </s>:0 $B:0",
                                         special_tokens=[("</s>", eos)])


#: How each kind of model marks sentences: ``post_processor(eos id)`` and the side to pad prompts on.
SEQ2SEQ, LANGUAGE_MODEL = (eos_appended, "right"), (eos_prepended, "left")


def renumbered(tokenizer_json: dict, symbols: list[str]) -> dict:
    """``tokenizer.json`` with the dictionary's ids; pieces it lacks numbered from ``len(symbols)`` on."""
    ids = {symbol: index for index, symbol in enumerate(symbols)}
    tok = json.loads(json.dumps(tokenizer_json))
    vocab = dict(ids)
    for piece in sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    tok["model"]["vocab"] = vocab
    for token in tok["added_tokens"]:
        if token["content"] not in ids:
            raise ValueError(f"added token {token['content']!r} is not in the fairseq dictionary")
        token["id"] = ids[token["content"]]
    return tok


def build_tokenizer(tokenizer_json: str | Path | dict, *, dictionary: str | Path | list[str] | None = None,
                    model_max_length: int = 1024, kind: tuple = SEQ2SEQ) -> NodeTransformerTokenizerFast:
    """A fast tokenizer from the experiment's ``tokenizer.json``: BPE ids, or a fairseq dictionary's.

    ``dictionary`` is a fairseq ``dict.txt`` (or its symbol list); with it, ids are exactly those
    ``fairseq-preprocess`` writes. ``kind``: ``SEQ2SEQ`` (``</s>`` appended, right padding) or
    ``LANGUAGE_MODEL`` (``</s>`` first, left padding for batched prompts).
    """
    post_processor, padding_side = kind
    tok = tokenizer_json if isinstance(tokenizer_json, dict) else json.loads(Path(tokenizer_json).read_text("utf-8"))
    if tok["model"].get("type") != "BPE":
        raise ValueError(f"expected a BPE tokenizer.json, got {tok['model'].get('type')!r}")
    size = None
    if dictionary is not None:
        symbols = dictionary if isinstance(dictionary, list) else read_fairseq_dictionary(dictionary)
        if symbols[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"{dictionary}: a fairseq dictionary starts with {SPECIALS}")
        tok, size = renumbered(tok, symbols), len(symbols)
    specials = {t["content"]: t["id"] for t in tok["added_tokens"]}
    if [specials.get(s) for s in SPECIALS] != list(range(len(SPECIALS))):
        raise ValueError(f"the tokenizer's special tokens must be {SPECIALS} with ids 0-3 (node_seq.text.tokenizer's)")
    backend = Tokenizer.from_str(json.dumps(tok))
    backend.post_processor = post_processor(specials["</s>"])
    return NodeTransformerTokenizerFast(
        tokenizer_object=backend, dictionary_size=size, bos_token="<s>",
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length,
        padding_side=padding_side,
    )


def build_fairseq_tokenizer(source: FairseqVocabulary, target: FairseqVocabulary | None = None, *,
                            model_max_length: int = 1024, kind: tuple = SEQ2SEQ) -> NodeTransformerTokenizerFast:
    """A fast tokenizer over fairseq dictionaries (see :mod:`.fairseq_vocabulary`); ``target`` when it
    differs; ``kind`` as in :func:`build_tokenizer`."""
    post_processor, padding_side = kind
    eos = SPECIALS.index("</s>")
    for side in (source, target):
        if side is not None:
            side.tokenizer.post_processor = post_processor(eos)
    sides = {"": source} if target is None else {"": source, "target_": target}
    extra = {f"{prefix}dictionary_size": side.dictionary_size for prefix, side in sides.items()}
    extra.update({f"{prefix}dictionary_aliases": {str(k): v for k, v in side.aliases.items()}
                  for prefix, side in sides.items() if side.aliases})
    extra.update({f"{prefix}uncovered_words": side.uncovered for prefix, side in sides.items() if side.uncovered})
    tokenizer = NodeTransformerTokenizerFast(
        tokenizer_object=source.tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=model_max_length, padding_side=padding_side, split_special_tokens=True,
        clean_up_tokenization_spaces=False, **extra,
    )
    if target is not None:
        tokenizer._target_backend = target.tokenizer
    return tokenizer


__all__ = ["LANGUAGE_MODEL", "SEQ2SEQ", "NodeTransformerTokenizerFast", "build_fairseq_tokenizer", "build_tokenizer",
           "read_fairseq_dictionary"]
