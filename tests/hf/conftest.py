"""Fixtures of the HF tests: one thread, and fairseq checkpoints trained in-process (once per session)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from hf_helpers import FairseqRun, fairseq_train


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


@pytest.fixture(scope="session")
def fairseq_data(tmp_path_factory) -> tuple[Path, Path]:
    """Numbers below 1000, digits -> words: short enough that a tiny model learns it in seconds."""
    import random

    from node_seq.data.numbers import number_to_words
    from node_seq.prepare import prepare

    root = tmp_path_factory.mktemp("numbers")
    numbers = list(range(1000))
    random.Random(1).shuffle(numbers)
    splits = {"test": numbers[:48], "valid": numbers[48:64], "train": numbers[64:]}
    (root / "raw").mkdir()
    for split, chosen in splits.items():
        (root / "raw" / f"{split}.src").write_text("".join(" ".join(str(n)) + "\n" for n in chosen))
        (root / "raw" / f"{split}.tgt").write_text("".join(number_to_words(n) + "\n" for n in chosen))
    with one_thread():
        bin_dir = prepare(root / "raw", root / "data", src="src", tgt="tgt",
                          splits={"train": "train", "valid": "valid", "test": "test"}, vocab_size=128)
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
