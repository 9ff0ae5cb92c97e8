"""Fixtures of the HF tests: one thread, and fairseq checkpoints trained in-process (once per session)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from hf_helpers import FairseqRun, fairseq_preprocess, fairseq_train


@contextlib.contextmanager
def one_thread():
    """One torch thread: tiny models only lose from more on shared cores (and trainings get slow)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


# Every number below 1000 (digits -> words), the held-out ones of three digits: short enough that a
# tiny model learns it in seconds.
NUMBERS = dict(sizes={"train": 936, "valid": 16, "test": 48}, max_digits=3)


@pytest.fixture(scope="session")
def fairseq_data(tmp_path_factory) -> tuple[Path, Path]:
    """The numbers task prepared as node-seq prepares it (its BPE, fairseq binaries): raw text, binaries."""
    from node_seq.text.numbers import prepare_numbers

    root = tmp_path_factory.mktemp("numbers")
    with one_thread():
        bin_dir = prepare_numbers(root, vocab_size=128, **NUMBERS)
    return root / "data" / "raw", bin_dir


def _run(tmp_path_factory, fairseq_data, name: str, extra: list[str]) -> FairseqRun:
    from node_seq.hf.convert import convert

    raw, bin_dir = fairseq_data
    root = tmp_path_factory.mktemp(name)
    with one_thread():
        checkpoint = fairseq_train(bin_dir, root / "checkpoints", extra)
        convert(checkpoint, bin_dir, root / "hf")
    return FairseqRun(raw=raw, bin=bin_dir, checkpoint=checkpoint, hf=root / "hf")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fairseq_data) -> FairseqRun:
    """rk4, shared embeddings, trained long enough to translate some numbers (varied outputs)."""
    return _run(tmp_path_factory, fairseq_data, "rk4", ["--node-method", "rk4", "--node-steps", "1",
                                                        "--share-all-embeddings", "--max-update", "100"])


@pytest.fixture(scope="session")
def variant_run(tmp_path_factory, fairseq_data) -> FairseqRun:
    """euler x2, separated decoder, augmented, time-dependent, decoder-only tying; a few updates."""
    return _run(tmp_path_factory, fairseq_data, "variant", [
        "--node-method", "euler", "--node-steps", "2", "--node-separated-decoder", "--node-augment-dims", "4",
        "--node-time-dependent", "--share-decoder-input-output-embed", "--max-update", "3"])


@pytest.fixture(scope="session")
def post_norm_run(tmp_path_factory, fairseq_data) -> FairseqRun:
    """The reference baseline's layers: plain post-norm on both sides (no final LayerNorms); a few updates."""
    return _run(tmp_path_factory, fairseq_data, "post_norm", [
        "--no-node-encoder", "--no-node-decoder", "--node-plain-norm", "post", "--share-all-embeddings",
        "--max-update", "3"])


@pytest.fixture(scope="session", params=["rk2_gated", "pc"])
def learned_run(request, tmp_path_factory, fairseq_data) -> FairseqRun:
    """A learned block on both sides, two steps (rk2_gated by backprop, pc checkpointed); a few updates."""
    gradient = {"rk2_gated": "backprop", "pc": "checkpoint"}[request.param]
    return _run(tmp_path_factory, fairseq_data, request.param, [
        "--node-method", request.param, "--node-steps", "2", "--node-gradient", gradient, "--share-all-embeddings",
        "--max-update", "3"])


# ----------------------------------------------------------------------------------------------
# models trained on the user's own preprocessing (plain fairseq-preprocess, no tokenizer.json)


@pytest.fixture(scope="session")
def user_text(tmp_path_factory) -> Path:
    """The user's raw text: the numbers task, already split into words."""
    from node_seq.text.numbers import write_task

    raw = tmp_path_factory.mktemp("user_text") / "raw"
    write_task(raw, **NUMBERS)
    return raw


def _user_run(tmp_path_factory, raw: Path, name: str, preprocess, post_process: str | None, *, joined: bool,
              extra: list[str], **convert_options) -> FairseqRun:
    """The user's pipeline: preprocess each line, fairseq-preprocess, fairseq-train, then convert."""
    from node_seq.hf.convert import convert

    root = tmp_path_factory.mktemp(name)
    (root / "text").mkdir()
    for path in raw.iterdir():
        lines = path.read_text().splitlines()
        (root / "text" / path.name).write_text("".join(preprocess(line) + "\n" for line in lines))
    with one_thread():
        bin_dir = fairseq_preprocess(root / "text", root / "bin", joined=joined)
        checkpoint = fairseq_train(bin_dir, root / "checkpoints", ["--max-update", "40", *extra])
        convert(checkpoint, bin_dir, root / "hf", **convert_options)
    return FairseqRun(raw=raw, bin=bin_dir, checkpoint=checkpoint, hf=root / "hf", preprocess=preprocess,
                      post_process=post_process)


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory, user_text) -> FairseqRun:
    """Pre-tokenised text, separate source and target dictionaries and embeddings, converted from them alone."""
    return _user_run(tmp_path_factory, user_text, "plain", str, None, joined=False,
                     extra=["--node-method", "rk4", "--node-steps", "1"])


@pytest.fixture(scope="session")
def spm_run(tmp_path_factory, user_text) -> FairseqRun:
    """A joint sentencepiece model (spm_encode), a joined dictionary and shared embeddings; --spm-model.

    At the default character coverage the one "z" of the training text (in "zero") is not covered:
    spm_encode writes it as it is and fairseq-preprocess adds it to the dictionary.
    """
    import sentencepiece

    model = tmp_path_factory.mktemp("spm") / "spm"
    sentencepiece.SentencePieceTrainer.train(input=[str(user_text / "train.src"), str(user_text / "train.tgt")],
                                             model_prefix=str(model), vocab_size=48, num_threads=1, minloglevel=2)
    processor = sentencepiece.SentencePieceProcessor(model_file=f"{model}.model")
    return _user_run(tmp_path_factory, user_text, "spm_run",
                     lambda line: " ".join(processor.encode(line, out_type=str)), "sentencepiece", joined=True,
                     extra=["--node-method", "euler", "--node-steps", "2", "--share-all-embeddings"],
                     spm_model=f"{model}.model")


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory, user_text) -> FairseqRun:
    """subword-nmt codes (apply_bpe, @@ marks), separate dictionaries, tied decoder; --bpe-codes."""
    import io

    from subword_nmt.apply_bpe import BPE
    from subword_nmt.learn_bpe import learn_bpe

    codes = tmp_path_factory.mktemp("bpe") / "codes"
    text = "".join((user_text / f"train.{lang}").read_text() for lang in ("src", "tgt"))
    with codes.open("w", encoding="utf-8") as out:
        learn_bpe(io.StringIO(text), out, 30, min_frequency=2)
    with codes.open(encoding="utf-8") as lines:
        bpe = BPE(lines)
    return _user_run(tmp_path_factory, user_text, "bpe_run", bpe.process_line, "subword_nmt",
                     joined=False, extra=["--node-method", "midpoint", "--node-steps", "1",
                                          "--share-decoder-input-output-embed"],
                     bpe_codes=codes)
