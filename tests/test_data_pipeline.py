"""The embedded task, the shared tokenizer, data preparation and scoring, including their errors."""

import gzip
import re

import pytest

from node_seq.text.generate_log import nfe_line, read_nfe, read_sentence_nfe, sentence_nfe_line
from node_seq.text.numbers import number_to_words, write_task
from node_seq.text.score import main as score_main
from node_seq.text.score import score
from node_seq.text.tokenizer import detokenize, encode_lines, train_tokenizer


@pytest.mark.parametrize("n,words", [(0, "zero"), (13, "thirteen"), (40, "forty"), (101, "one hundred one"),
                                     (40713, "forty thousand seven hundred thirteen"),
                                     (100000, "one hundred thousand"), (999999, "nine hundred ninety nine "
                                                                              "thousand nine hundred ninety nine")])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_task_is_deterministic_and_splits_are_disjoint(tmp_path):
    sizes = {"train": 300, "valid": 20, "test": 30}
    write_task(tmp_path / "a", seed=4, sizes=sizes)
    write_task(tmp_path / "b", seed=4, sizes=sizes)
    assert (tmp_path / "a" / "train.src").read_text() == (tmp_path / "b" / "train.src").read_text()
    splits = {s: set((tmp_path / "a" / f"{s}.src").read_text().splitlines()) for s in sizes}
    assert {s: len(v) for s, v in splits.items()} == sizes
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["valid"])
    assert {" ".join(str(n)) for n in range(100)} <= splits["train"]  # the words all numbers are made of
    assert all(len(line.split()) >= 3 for line in splits["test"] | splits["valid"])


def test_tokenizer_round_trips(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Zwei junge Männer sind im Freien.\nA dog runs.\n" * 20)
    tokenizer = train_tokenizer([corpus], vocab_size=60)
    lines = ["Zwei Männer im Freien.", "A dog runs."]
    assert [detokenize(p) for p in encode_lines(tokenizer, lines)] == lines
    # Characters never seen in training become <unk> (fairseq's dictionary maps it to its own <unk>).
    assert encode_lines(tokenizer, ["dog!"])[0].endswith("<unk>")


def test_tokenizer_splits_punctuation_from_words_as_sentencepiece_does(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text('Ein Hut, ein Mann (links) und "Jeans".\n' * 50)  # frequent enough to merge "Hut," if allowed
    tokenizer = train_tokenizer([corpus], vocab_size=200)
    pieces = encode_lines(tokenizer, ['Ein Hut, ein Mann (links) und "Jeans".'])[0].split()
    assert pieces == ["\u2581Ein", "\u2581Hut", ",", "\u2581ein", "\u2581Mann", "\u2581", "(", "links", ")",
                      "\u2581und", "\u2581", '"', "Jeans", '"', "."]
    assert detokenize(" ".join(pieces)) == 'Ein Hut, ein Mann (links) und "Jeans".'


def _write(raw, name, lines):
    with gzip.open(raw / f"{name}.gz", "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("problem,message", [
    ("missing", "missing split file"),
    ("empty-line", r"valid.de: empty file or empty lines \(line 2\)"),
    ("mismatch", "train: 3 de lines but 2 en lines"),
])
def test_prepare_rejects_bad_data_before_writing(tmp_path, problem, message):
    from node_seq.text.prepare import prepare

    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw, "train.de", ["a b", "c d", "e f"])
    _write(raw, "train.en", ["a b", "c d"] + ([] if problem == "mismatch" else ["e f"]))
    _write(raw, "val.de", ["a", "" if problem == "empty-line" else "b"])
    if problem != "missing":
        _write(raw, "val.en", ["a", "b"])
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare(raw, out, src="de", tgt="en", splits={"train": "train", "valid": "val"}, vocab_size=16)
    assert not out.exists()


def test_prepare_binarizes_fairseqs_extra_test_sets(tmp_path):
    """test, test1, test2 (Multi30k's 2016 and 2017 sets, say) each reach bin/ under fairseq's name."""
    pytest.importorskip("fairseq")
    from fairseq.data import Dictionary, data_utils

    from node_seq.text.prepare import main

    raw = tmp_path / "raw"
    raw.mkdir()
    sizes = {"train": 6, "valid": 2, "t16": 3, "t17": 4, "t18": 5}
    for stem, size in sizes.items():
        for lang in ("de", "en"):
            _write(raw, f"{stem}.{lang}", [f"{stem} {lang} {n}" for n in range(size)])
    main([str(raw), str(tmp_path / "out"), "--src", "de", "--tgt", "en", "--vocab-size", "40",
          "--splits", "train,valid,test2=t18,test=t16,test1=t17"])
    bin_dir = tmp_path / "out" / "bin"
    dictionary = Dictionary.load(str(bin_dir / "dict.de.txt"))
    for split, stem in {"test": "t16", "test1": "t17", "test2": "t18"}.items():
        dataset = data_utils.load_indexed_dataset(str(bin_dir / f"{split}.de-en.de"), dictionary)
        assert len(dataset) == sizes[stem]
        assert (tmp_path / "out" / "raw" / f"{split}.en").read_text().startswith(f"{stem} en 0\n")


@pytest.mark.parametrize("splits,message", [
    ("train,dev", r"split names are train, valid, test, and valid1, valid2, ..., test1, test2, ... .*\['dev'\]"),
    ("train,test,test01", r"split names are .*\['test01'\]"),
    ("train,test0", r"split names are .*\['test0'\]"),
    ("train,test,test2", r"test2 needs test1 \(fairseq numbers the extra sets in order: test, test1, test2"),
    ("train,valid1", r"valid1 needs valid "),
])
def test_prepare_refuses_split_names_fairseq_cannot_write(tmp_path, capsys, splits, message):
    from node_seq.text.prepare import main

    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out"), "--src", "de", "--tgt", "en", "--splits", splits])
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_score_counts_exact_matches_and_refuses_partial_logs(tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("one two\nthree\n")
    log = tmp_path / "gen.log"
    log.write_text("S-1\t3\nD-1\t-0.1\tthree\nD-0\t-0.2\tone too\n"
                   "INFO:x:NODE NFE: 12.5 function evaluations per sentence (...)\n")
    result = score(log, refs)
    assert result["sentences"] == 2 and result["exact_match"] == 50.0 and result["nfe_per_sentence"] == 12.5
    assert result["length_ratio"] == 1.0 and result["precisions"][0] == 66.7  # 2 of 3 words
    log.write_text("D-0\t-0.2\tone\nD-1\t-0.1\tthree\n")
    assert score(log, refs)["length_ratio"] == 0.667 and score(log, refs)["precisions"][0] == 100.0
    log.write_text("S-1\t3\nD-1\t-0.1\tthree\nD-0\t-0.2\tone too\n")
    score_main([str(log), str(refs), "--hypotheses-out", str(tmp_path / "hyp.txt")])
    assert (tmp_path / "hyp.txt").read_text() == "one too\nthree\n"  # reference order, not log order
    log.write_text("D-0\t-0.2\tone two\n")
    with pytest.raises(ValueError, match="1 hypotheses for 2 references.*--required-batch-size-multiple 1"):
        score(log, refs)


def test_nfe_line_is_written_and_read_in_one_format():
    line = nfe_line([130.0, 135.72, 140.0])
    assert line == ("NODE NFE: 135.2 function evaluations per sentence (encoder + all decoding steps, forward only; "
                    "over 3 sentences: sd 4.1, min 130.0, median 135.7, max 140.0)")
    log = f"INFO | fairseq_cli.generate | Translated 3 sentences\nINFO | fairseq_cli.generate | {line}\n"
    assert read_nfe(log) == 135.2
    assert read_nfe("Translated 3 sentences (40 tokens)") is None


def test_sentence_nfe_lines_are_written_and_read_in_one_format():
    log = "\n".join(["S-7\tein Satz", sentence_nfe_line(7, 41.25), "H-7\t-0.3\ta sentence",
                     sentence_nfe_line(12, 38.0), "N-x\t3", "INFO:x:NODE NFE: 39.6 ..."])
    assert sentence_nfe_line(7, 41.25) == "N-7\t41.25"
    assert read_sentence_nfe(log) == {7: 41.25, 12: 38.0}
    assert read_sentence_nfe("H-0\t-0.1\tno NFE here") == {}


def test_truncated_fairseq_checkpoint_fails_clearly(tmp_path):
    pytest.importorskip("fairseq")
    import torch
    from fairseq import checkpoint_utils

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(RuntimeError, match="failed finding central directory|zip archive"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
