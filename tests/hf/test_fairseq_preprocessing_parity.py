"""Models trained on the user's own preprocessing convert to the HF model fairseq would be.

Three pipelines of plain ``fairseq-preprocess`` data, none with node-seq's ``tokenizer.json``:
pre-tokenised text with separate source and target dictionaries (converted from the dictionaries
alone), a sentencepiece model (``--spm-model``) and subword-nmt codes (``--bpe-codes``). For each,
the HF tokenizer reads the user's raw text into the ids fairseq's ``Dictionary.encode_line`` gives
the preprocessed text, and the converted model generates what ``SequenceGenerator`` generates,
decoded as ``fairseq-generate --post-process`` prints it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import node_seq.fairseq  # noqa: F401  (registers the fairseq model; allow-lists its checkpoints)
from node_seq.hf.convert import ConversionError, convert, main

from hf_helpers import fairseq_side

pytestmark = pytest.mark.slow  # every test reads models fairseq-train trained (tests/hf/conftest.py)

RUNS = ["plain_run", "spm_run", "bpe_run"]
# Lines the training data never had: unknown words and characters, odd spacing, nothing at all.
ODD = {"src": ["4 zebra 1", "  7  0   3 ", "", "12 3 Ω"],
       "tgt": ["four zillion", "  ninety  nine ", "", "sevenΩ x", "zero zz zΩ"]}
# Whitespace other than spaces inside a line: subword-nmt splits words at spaces only (a known difference).
OTHER_WHITESPACE = {"src": ["7\t\t0\u00a03"], "tgt": ["ninety\tnine\u3000hundred"]}


def encode(tokenizer, line: str, side: str) -> list[int]:
    return tokenizer(line)["input_ids"] if side == "src" else tokenizer(text_target=line)["input_ids"]


@pytest.mark.parametrize("run_name", RUNS)
def test_ids_equal_fairseq_encode_line_of_the_preprocessed_text(run_name, request):
    run = request.getfixturevalue(run_name)
    tokenizer = AutoTokenizer.from_pretrained(run.hf)
    _, task = fairseq_side(run)
    dictionaries = {"src": task.source_dictionary, "tgt": task.target_dictionary}
    for side, dictionary in dictionaries.items():
        lines = (run.raw / f"test.{side}").read_text().splitlines() + ODD[side]
        lines += OTHER_WHITESPACE[side] if run.post_process != "subword_nmt" else []
        unknown = 0
        for line in lines:
            expected = dictionary.encode_line(run.preprocess(line), add_if_not_exist=False).tolist()
            assert encode(tokenizer, line, side) == expected, (side, line, run.preprocess(line))
            unknown += expected.count(dictionary.unk())
        assert unknown > 0
    if run_name == "spm_run":  # text sentencepiece did not cover, which fairseq looked up, was exercised
        assert tokenizer.init_kwargs["uncovered_words"] == {"z": task.target_dictionary.index("z")}
        assert encode(tokenizer, "zero", "tgt")[1] == task.target_dictionary.index("z") != task.target_dictionary.unk()
    # and the very ids fairseq-preprocess wrote for the test split
    dataset = task.dataset("test")
    raw = {side: (run.raw / f"test.{side}").read_text().splitlines() for side in dictionaries}
    for i in range(len(dataset)):
        assert encode(tokenizer, raw["src"][i], "src") == dataset[i]["source"].tolist()
        assert encode(tokenizer, raw["tgt"][i], "tgt") == dataset[i]["target"].tolist()


def test_separate_dictionaries_give_separate_vocabularies(plain_run):
    _, task = fairseq_side(plain_run)
    source, target = len(task.source_dictionary), len(task.target_dictionary)
    assert source != target
    config = json.loads((plain_run.hf / "config.json").read_text())
    assert (config["vocab_size"], config["decoder_vocab_size"], config["share_all_embeddings"]) == (source, target, False)
    model = AutoModelForSeq2SeqLM.from_pretrained(plain_run.hf)
    assert model.get_input_embeddings().num_embeddings == source
    assert model.lm_head.out_features == model.get_decoder().embed_tokens.num_embeddings == target
    tokenizer = AutoTokenizer.from_pretrained(plain_run.hf)
    assert tokenizer.vocab_size == source
    assert (plain_run.hf / "target_tokenizer.json").exists()
    # a target word is read as the target dictionary's id, a source word as the source dictionary's
    word, digit = "hundred", "7"
    assert tokenizer(text_target=word)["input_ids"][0] == task.target_dictionary.index(word)
    assert tokenizer(digit)["input_ids"][0] == task.source_dictionary.index(digit)
    assert tokenizer(word)["input_ids"][0] == task.source_dictionary.unk()


@pytest.mark.parametrize("run_name", RUNS)
def test_generation_and_its_text_equal_fairseq_generate(run_name, request):
    from fairseq.sequence_generator import SequenceGenerator

    run = request.getfixturevalue(run_name)
    fairseq_model, task = fairseq_side(run)
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(run.hf).eval(), AutoTokenizer.from_pretrained(run.hf)
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(16)])
    generator = SequenceGenerator([fairseq_model], task.target_dictionary, beam_size=4, max_len_a=0, max_len_b=12,
                                  min_len=1, len_penalty=1.0)
    with torch.no_grad():
        hypotheses = generator.generate([fairseq_model], sample)
    sources = (run.raw / "test.src").read_text().splitlines()
    batch = tokenizer([sources[i] for i in sample["id"].tolist()], return_tensors="pt", padding=True)
    generated = model.generate(**batch, num_beams=4, max_len_b=12)
    dictionary, lengths = task.target_dictionary, set()
    for row in range(len(hypotheses)):
        expected = hypotheses[row][0]["tokens"]
        tokens = generated[row, 1:].tolist()
        assert tokens[: tokens.index(2) + 1] == expected.tolist(), row
        text = dictionary.string(expected, run.post_process, extra_symbols_to_ignore=[dictionary.unk()])
        assert tokenizer.decode(generated[row], skip_special_tokens=True) == text, row
        lengths.add(len(expected))
    assert max(lengths) > 2  # more than one token before </s>: the decoding rules are exercised


# ----------------------------------------------------------------------------------------------
# bad input: refused naming the option, before anything is written


def test_conflicting_or_missing_tokenizer_files_are_refused_before_writing(bpe_run, spm_run, tmp_path):
    out = tmp_path / "out"
    codes = bpe_run.hf.parent / "missing"
    cases = [
        (dict(spm_model=spm_run.hf, bpe_codes=bpe_run.hf), "--spm-model and --bpe-codes: give at most one"),
        (dict(bpe_codes=codes), f"--bpe-codes: not found: {codes}"),
        (dict(spm_model=bpe_run.checkpoint), "not a sentencepiece model"),
    ]
    for options, message in cases:
        with pytest.raises(ConversionError, match=message):
            convert(bpe_run.checkpoint, bpe_run.bin, out, **options)
    assert not out.exists()


def test_a_dictionary_that_does_not_fit_the_checkpoint_is_refused(plain_run, tmp_path):
    data = shutil.copytree(plain_run.bin, tmp_path / "bin")
    (data / "dict.tgt.txt").write_text((data / "dict.tgt.txt").read_text() + "extra 1\n")
    with pytest.raises(ConversionError, match=r"--data-bin: .*dict.tgt.txt has \d+ words but the checkpoint's "
                                              r"decoder has \d+ embeddings"):
        convert(plain_run.checkpoint, data, tmp_path / "out")
    # the source dictionary in place of the target one: the same kind of refusal
    (data / "dict.tgt.txt").write_text((data / "dict.src.txt").read_text())
    with pytest.raises(ConversionError, match="decoder has"):
        convert(plain_run.checkpoint, data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_codes_and_models_that_cannot_be_reproduced_are_refused(plain_run, bpe_run, tmp_path):
    old_codes = tmp_path / "old_codes"
    old_codes.write_text("f o\nfo u\n")  # subword-nmt 0.1: no version line
    with pytest.raises(ConversionError, match="expected subword-nmt codes starting with '#version: 0.2'"):
        convert(bpe_run.checkpoint, bpe_run.bin, tmp_path / "out", bpe_codes=old_codes)
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(input=str(plain_run.raw / "train.tgt"), model_prefix=str(tmp_path / "bpe"),
                                             vocab_size=40, model_type="bpe", num_threads=1, minloglevel=2)
    with pytest.raises(ConversionError, match="a 'bpe' sentencepiece model; only 'unigram'"):
        convert(bpe_run.checkpoint, bpe_run.bin, tmp_path / "out", spm_model=tmp_path / "bpe.model")
    # the data was not encoded with this sentencepiece model: its words are no pieces of it
    sentencepiece.SentencePieceTrainer.train(input=str(plain_run.raw / "train.tgt"), model_prefix=str(tmp_path / "uni"),
                                             vocab_size=40, num_threads=1, minloglevel=2)
    with pytest.raises(ConversionError, match="words are no piece of the sentencepiece model"):
        convert(bpe_run.checkpoint, bpe_run.bin, tmp_path / "out", spm_model=tmp_path / "uni.model")
    # node-seq's own tokenizer.json needs one joined dictionary
    tokenizer_json = tmp_path / "tokenizer.json"
    tokenizer_json.write_text((plain_run.hf / "tokenizer.json").read_text())
    with pytest.raises(ConversionError, match="--tokenizer: .* needs one joined dictionary"):
        convert(plain_run.checkpoint, plain_run.bin, tmp_path / "out", tokenizer_json=tokenizer_json)
    assert not (tmp_path / "out").exists()


def test_languages_come_from_the_data_files_or_the_options(plain_run, tmp_path):
    data = tmp_path / "bin"
    data.mkdir()
    for lang in ("src", "tgt"):  # the dictionaries alone: no data files to read the language pair from
        (data / f"dict.{lang}.txt").write_text((plain_run.bin / f"dict.{lang}.txt").read_text())
    with pytest.raises(ConversionError, match="--data-bin: cannot tell the source and target languages .* give "
                                              "--source-lang and --target-lang"):
        convert(plain_run.checkpoint, data, tmp_path / "out")
    convert(plain_run.checkpoint, data, tmp_path / "out", languages=("src", "tgt"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["decoder_vocab_size"] == len(
        (data / "dict.tgt.txt").read_text().splitlines()) + 4
    # node-seq's own tokenizer.json found in such a folder is refused too: it needs one joined dictionary
    (data / "tokenizer.json").write_text((plain_run.hf / "tokenizer.json").read_text())
    with pytest.raises(ConversionError, match=r"--data-bin: .*tokenizer.json needs one joined dictionary.* move"):
        convert(plain_run.checkpoint, data, tmp_path / "again", languages=("src", "tgt"))
    assert not (tmp_path / "again").exists()


def test_the_script_reports_bad_options_by_name(bpe_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(bpe_run.checkpoint), "--data-bin", str(bpe_run.bin), "--out", str(tmp_path / "o"),
              "--spm-model", str(tmp_path / "nope.model")])
    assert f"--spm-model: not found: {tmp_path / 'nope.model'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(bpe_run.checkpoint), "--data-bin", str(bpe_run.bin), "--out", str(tmp_path / "o"),
              "--source-lang", "src"])
    assert "--source-lang and --target-lang: give both or neither" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
