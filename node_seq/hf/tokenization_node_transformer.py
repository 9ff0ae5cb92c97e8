"""The HF fast tokenizer of node-seq: the experiment's BPE (``node_seq.tokenizer``), ``</s>`` appended.

Two numberings:

* the BPE's own ids (a model trained the HF way, ``scripts/train_hf.py``);
* a fairseq dictionary's ids (a converted fairseq model). fairseq reads the BPE's pieces as strings
  and looks each up in its dictionary, so a piece the dictionary lacks (one the BPE learnt but that
  never ended a word of the training data, single letters included) becomes ``<unk>``. The BPE of
  ``tokenizers`` keys its merges by token id, so those pieces cannot all share the ``<unk>`` id
  inside it; they keep ids of their own past the dictionary (``>= dictionary_size``) and
  :class:`NodeTransformerTokenizerFast` maps those to ``<unk>`` on the way out.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from ..tokenizer import SPECIALS


class NodeTransformerTokenizerFast(PreTrainedTokenizerFast):
    """``PreTrainedTokenizerFast`` whose ids at or past ``dictionary_size`` come out as ``<unk>``."""

    # No __init__ of its own: transformers would then rebuild the backend from vocab and merges alone,
    # losing the normalizer, pre-tokenizer and decoder of tokenizer.json.

    @property
    def dictionary_size(self) -> int | None:
        """Size of the fairseq dictionary (the ``dictionary_size`` argument, kept in tokenizer_config.json)."""
        return self.init_kwargs.get("dictionary_size")

    def _to_dictionary(self, ids: list[int]) -> list[int]:
        if self.dictionary_size is None:
            return ids
        unk, size = self._tokenizer.token_to_id(str(self.unk_token)), self.dictionary_size
        return [i if i < size else unk for i in ids]

    def _convert_encoding(self, encoding, *args, **kwargs):
        encoded, encodings = super()._convert_encoding(encoding, *args, **kwargs)
        encoded["input_ids"] = [self._to_dictionary(ids) for ids in encoded["input_ids"]]
        return encoded, encodings

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        return self._to_dictionary([super()._convert_token_to_id_with_added_voc(token)])[0]

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        return self._to_dictionary(super()._encode_without_added_tokens(text))

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the fairseq dictionary (pieces past it are only spellings of ``<unk>``)."""
        return self.dictionary_size if self.dictionary_size is not None else super().vocab_size


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


def _eos_appended(tok: dict, eos: int) -> None:
    tok["post_processor"] = {  # fairseq appends </s> to every source and target sentence
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "special_tokens": {"</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]}},
    }


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
                    model_max_length: int = 1024) -> NodeTransformerTokenizerFast:
    """A fast tokenizer from the experiment's ``tokenizer.json``: BPE ids, or a fairseq dictionary's.

    ``dictionary`` is a fairseq ``dict.txt`` (or its symbol list); with it, ids are exactly those
    ``fairseq-preprocess`` writes.
    """
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
        raise ValueError(f"the tokenizer's special tokens must be {SPECIALS} with ids 0-3 (node_seq.tokenizer's)")
    tok = json.loads(json.dumps(tok))
    _eos_appended(tok, specials["</s>"])
    return NodeTransformerTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(tok)), dictionary_size=size, bos_token="<s>",
        pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length,
        padding_side="right",
    )


__all__ = ["NodeTransformerTokenizerFast", "build_tokenizer", "read_fairseq_dictionary"]
