"""One checkpoint, two implementations: fairseq's model and the converted HF model must agree.

In the spirit of minGPT's parity test: same weights, same sources, a fixed-grid solver; encoder
states and decoder logits agree within 1e-5, and greedy and beam search produce the very tokens
of fairseq's ``SequenceGenerator`` (beam 1 and 4, length penalty 1, ``max_len_b``, min length 1).
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import node_seq.fairseq  # noqa: F401  (registers the fairseq model; allow-lists its checkpoints)
from node_seq.hf.convert import ConversionError, convert, load_fairseq_checkpoint
from node_seq.text.tokenizer import encode_lines, load_tokenizer

from hf_helpers import both_outputs, fairseq_side, load_with_report

pytestmark = pytest.mark.slow  # every test reads models fairseq-train trained (tests/hf/conftest.py)

RUNS = ["trained_run", "variant_run", "post_norm_run"]


def hf_side(run):
    model, report = load_with_report(AutoModelForSeq2SeqLM, run.hf, strict=True)
    assert report == ""  # a converted folder loads with every weight in place, no warning
    return model.eval(), AutoTokenizer.from_pretrained(run.hf)


def test_tokenizer_ids_equal_the_fairseq_dictionary_ids(trained_run):
    from fairseq.data import Dictionary

    tokenizer = AutoTokenizer.from_pretrained(trained_run.hf)
    dictionary = Dictionary.load(str(trained_run.bin / "dict.src.txt"))
    bpe = load_tokenizer(trained_run.bin / "tokenizer.json")
    lines = [line for lang in ("src", "tgt") for line in (trained_run.raw / f"test.{lang}").read_text().splitlines()]
    lines += ["zebra xylophone 7", "ninety nine quintillion"]  # pieces fairseq's dictionary never saw -> <unk>
    unknown = 0
    for line, pieces in zip(lines, encode_lines(bpe, lines)):
        expected = dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=True).tolist()
        assert tokenizer(line)["input_ids"] == expected, line
        unknown += expected.count(dictionary.unk())
    assert unknown > 0
    assert len(tokenizer) >= tokenizer.vocab_size == len(dictionary)
    # and what fairseq-preprocess wrote for the test split
    _, task = fairseq_side(trained_run)
    dataset = task.dataset("test")
    sources = (trained_run.raw / "test.src").read_text().splitlines()
    assert all(tokenizer(sources[i])["input_ids"] == dataset[i]["source"].tolist() for i in range(len(dataset)))


@pytest.mark.parametrize("run_name", RUNS)
def test_encoder_states_and_logits_match_fairseq(run_name, request):
    run = request.getfixturevalue(run_name)
    fairseq_model, task = fairseq_side(run)
    model, tokenizer = hf_side(run)
    encoder, expected, out, sample = both_outputs(fairseq_model, model, task, 16)
    net = sample["net_input"]
    with torch.no_grad():
        assert torch.allclose(out.encoder_last_hidden_state, encoder, atol=1e-5)
        assert torch.allclose(out.logits, expected, atol=1e-5)
        # the HF way in: raw text, right padding
        sources = (run.raw / "test.src").read_text().splitlines()
        batch = tokenizer([sources[i] for i in sample["id"].tolist()], return_tensors="pt", padding=True)
        hidden = model.get_encoder()(**batch).last_hidden_state
    keep = net["src_tokens"].ne(1)
    for row in range(16):
        assert torch.allclose(hidden[row][batch["attention_mask"][row].bool()], encoder[row][keep[row]], atol=1e-5)


@pytest.mark.parametrize("run_name", RUNS)
@pytest.mark.parametrize("beam", [1, 4])
def test_generation_is_token_identical_to_fairseq(run_name, beam, request):
    from fairseq.sequence_generator import SequenceGenerator

    run = request.getfixturevalue(run_name)
    fairseq_model, task = fairseq_side(run)
    model, tokenizer = hf_side(run)
    dataset = task.dataset("test")
    count = 48 if run_name == "trained_run" else 8
    sample = dataset.collater([dataset[i] for i in range(count)])
    max_len_b = 12  # short enough that the untrained variant hits the limit (fairseq forces </s> there)
    generator = SequenceGenerator([fairseq_model], task.target_dictionary, beam_size=beam, max_len_a=0,
                                  max_len_b=max_len_b, min_len=1, len_penalty=1.0)
    with torch.no_grad():
        hypotheses = generator.generate([fairseq_model], sample)
    sources = (run.raw / "test.src").read_text().splitlines()
    batch = tokenizer([sources[i] for i in sample["id"].tolist()], return_tensors="pt", padding=True)
    generated = model.generate(**batch, num_beams=beam, max_len_b=max_len_b)
    lengths = set()
    for row in range(count):
        expected = hypotheses[row][0]["tokens"].tolist()
        tokens = generated[row, 1:].tolist()
        assert tokens[: tokens.index(2) + 1] == expected, (row, sources[sample["id"][row]])
        lengths.add(len(expected))
    if run_name == "trained_run":
        assert len(lengths) > 1  # outputs of varied lengths, ended by the model
    else:
        assert max_len_b + 1 in lengths  # the untrained model runs into the limit: fairseq's forced </s>
    assert (model.generation_nfe.nfe_forward > 0) == (run_name != "post_norm_run")  # plain layers count none


def test_hf_translate_prints_fairseq_translations(trained_run):
    from fairseq.sequence_generator import SequenceGenerator

    from node_seq.hf.cli import translate as hf_translate

    fairseq_model, task = fairseq_side(trained_run)
    dataset = task.dataset("test")
    sample = dataset.collater([dataset[i] for i in range(6)])
    generator = SequenceGenerator([fairseq_model], task.target_dictionary, beam_size=4)
    hypotheses = generator.generate([fairseq_model], sample)
    expected = [task.target_dictionary.string(h[0]["tokens"], "sentencepiece") for h in hypotheses]
    sources = (trained_run.raw / "test.src").read_text().splitlines()
    printed = io.StringIO()
    with redirect_stdout(printed):
        hf_translate.main(["--model", str(trained_run.hf), "--beam", "4",
                           *[sources[i] for i in sample["id"].tolist()]])
    assert printed.getvalue().splitlines() == expected


def test_conversion_reads_checkpoints_safely_and_writes_a_complete_folder(trained_run, tmp_path):
    args, weights = load_fairseq_checkpoint(trained_run.checkpoint)  # torch.load(weights_only=True) inside
    assert args.node_method == "rk4" and "decoder.output_projection.weight" in weights
    files = {p.name for p in trained_run.hf.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= files
    config = json.loads((trained_run.hf / "config.json").read_text())
    assert (config["node_method"], config["node_steps"], config["share_all_embeddings"]) == ("rk4", 1, True)

    # Differing source and target dictionaries convert (test_fairseq_preprocessing_parity.py); one that is
    # not the checkpoint's is refused, naming the option, before anything is written.
    other = shutil.copytree(trained_run.bin, tmp_path / "bin")
    (other / "dict.tgt.txt").write_text((other / "dict.tgt.txt").read_text() + "extra 1\n")
    with pytest.raises(ConversionError, match=r"--data-bin: .*dict.tgt.txt has \d+ words but the checkpoint's decoder"):
        convert(trained_run.checkpoint, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()
