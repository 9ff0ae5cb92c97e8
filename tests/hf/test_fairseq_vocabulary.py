"""The rebuilt tokenizers against the real tools on awkward text, no model needed.

Each test builds a fairseq dictionary from a small corpus run through the real preprocessing
(fairseq's ``tokenize_line``, sentencepiece, subword-nmt), then checks random strings over an
alphabet of awkward characters (Unicode whitespace, characters no model covers, ``@@``, ``▁``):
the HF ids equal ``Dictionary.encode_line`` of the preprocessed string, and decoding equals
``Dictionary.string`` with the matching ``--post-process``.
"""

from __future__ import annotations

import io
import random

import pytest

from node_seq.hf.fairseq_vocabulary import VocabularyError, read_bpe_codes, sentencepiece, subword_nmt, word_level
from node_seq.hf.sentencepiece_model import read_sentencepiece_model
from node_seq.hf.tokenization_node_transformer import build_fairseq_tokenizer, read_fairseq_dictionary
from node_seq.text.tokenizer import SPECIALS

WORDS = ["one", "two", "three", "seven", "eleven", "twelve", "hundred", "and", "twenty", "b@@", "x@@y", "@@", "o"]


def corpus(seed: int, count: int = 300) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(count)]


def awkward(seed: int, alphabet: str, count: int = 1500) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16))) for _ in range(count)]


def dictionary_of(lines: list[str], tmp_path):
    """The dictionary fairseq-preprocess would write for ``lines`` (padded with madeupwords), and its words."""
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    for line in lines:
        dictionary.encode_line(line, add_if_not_exist=True)
    dictionary.finalize(padding_factor=8)
    dictionary.save(str(tmp_path / "dict.txt"))
    return dictionary, read_fairseq_dictionary(tmp_path / "dict.txt")


def assert_like_fairseq(tokenizer, dictionary, preprocess, post_process, lines):
    for line in lines:
        expected = dictionary.encode_line(preprocess(line), add_if_not_exist=False)
        assert tokenizer(line)["input_ids"] == expected.tolist(), (line, preprocess(line))
        text = dictionary.string(expected, post_process, extra_symbols_to_ignore=[dictionary.unk()])
        assert tokenizer.decode(expected.tolist(), skip_special_tokens=True) == text, line


def test_word_level_splits_like_tokenize_line(tmp_path):
    lines = corpus(1)
    dictionary, words = dictionary_of(lines, tmp_path)
    tokenizer = build_fairseq_tokenizer(word_level(words))
    alphabet = "on e\t\n\x0b\x1c\x85\xa0\u2003\u3000" + "</s>" + "Ωb@"
    assert_like_fairseq(tokenizer, dictionary, str, None, lines[:50] + awkward(2, alphabet) + ["one </s> two<unk>"])


def test_subword_nmt_segments_and_joins_like_apply_bpe(tmp_path):
    from subword_nmt.apply_bpe import BPE
    from subword_nmt.learn_bpe import learn_bpe

    lines = corpus(3)
    codes = io.StringIO()
    learn_bpe(io.StringIO("\n".join(lines) + "\n"), codes, 40, min_frequency=2)
    (tmp_path / "codes").write_text(codes.getvalue())
    bpe = BPE(io.StringIO(codes.getvalue()))
    dictionary, words = dictionary_of([bpe.process_line(line) for line in lines[:150]], tmp_path)
    assert "@@" in words  # a word that is only the continuation mark: its symbol is empty
    vocabulary = subword_nmt(read_bpe_codes(tmp_path / "codes"), words)
    tokenizer = build_fairseq_tokenizer(vocabulary)
    # spaces only: subword-nmt splits words at spaces, fairseq at any whitespace (a known difference)
    assert_like_fairseq(tokenizer, dictionary, bpe.process_line, "subword_nmt",
                        lines + awkward(4, "onetwhrvlsdy @@Ω") + [" ".join(random.Random(5).sample(WORDS, 6))])


@pytest.mark.parametrize("normalization", ["nmt_nfkc", "identity"])
def test_sentencepiece_segments_like_spm_encode(tmp_path, normalization):
    import sentencepiece as spm

    (tmp_path / "train.txt").write_text("\n".join(corpus(6, 400) + ["ΩΩ☃éé zz z zΩ"]) + "\n")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "train.txt"), model_prefix=str(tmp_path / "m"), vocab_size=40,
                                   character_coverage=0.999, normalization_rule_name=normalization, num_threads=1,
                                   hard_vocab_limit=False, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    preprocess = lambda line: " ".join(processor.encode(line, out_type=str))  # noqa: E731  (spm_encode)
    lines = (tmp_path / "train.txt").read_text().splitlines()
    dictionary, words = dictionary_of([preprocess(line) for line in lines], tmp_path)
    vocabulary = sentencepiece(read_sentencepiece_model(tmp_path / "m.model"), words)
    assert vocabulary.uncovered  # runs of characters the model does not cover, in the dictionary
    tokenizer = build_fairseq_tokenizer(vocabulary)
    # no literal <s>, </s>, <pad>, <unk> in the text: the unigram model can read them as the specials
    alphabet = "onetwhrvl@y ΩΩ<>/uk\u3000\t ｏ\u00a0é▁☃z"
    assert_like_fairseq(tokenizer, dictionary, preprocess, "sentencepiece",
                        lines[:50] + [line for line in awkward(7, alphabet) if not any(w in line for w in SPECIALS)])


def test_a_dictionary_needs_the_fairseq_specials_first():
    with pytest.raises(VocabularyError, match="a fairseq dictionary starts with"):
        word_level(["<pad>", "<s>", "</s>", "<unk>", "a"], "dict.de.txt")
