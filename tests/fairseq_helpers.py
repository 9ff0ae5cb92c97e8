"""fairseq's command lines, run in-process (node_seq.fairseq.inprocess), with tiny models on the numbers task."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "node_transformer_tiny", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-layers", "1",
        "--decoder-layers", "1", "--share-all-embeddings"]
TRAIN = ["--optimizer", "adam", "--lr", "1e-3", "--criterion", "label_smoothed_cross_entropy",
         "--max-tokens", "512", "--num-workers", "0", "--log-format", "json", "--log-interval", "1",
         "--seed", "1", "--no-progress-bar"]


def make_task(root: Path, train_size: int = 120) -> Path:
    """The numbers task, binarised in ``root/data/bin`` (raw references in ``root/data/raw``)."""
    from node_seq.text.numbers import prepare_numbers

    return prepare_numbers(root, sizes={"train": train_size, "valid": 20, "test": 12}, vocab_size=48)


def fairseq_train(data: Path, save_dir: Path, extra: list[str], *, log_file: Path | None = None) -> None:
    from node_seq.fairseq import inprocess

    argv = [str(data), *TINY, *TRAIN, "--save-dir", str(save_dir), *extra]
    inprocess.train(argv + (["--log-file", str(log_file)] if log_file is not None else []))


def train_one_step_models(root: Path, methods: tuple[str, ...]) -> tuple[Path, dict[str, Path]]:
    """The numbers task's data folder (``bin/`` and ``raw/``) and, per NODE method, a model with one
    step of that method per block, trained four updates (``checkpoint_last.pt``)."""
    bins = make_task(root)
    for method in methods:
        fairseq_train(bins, root / method, ["--node-method", method, "--node-steps", "1", "--max-update", "4"])
    return bins.parent, {method: root / method / "checkpoint_last.pt" for method in methods}


def fairseq_generate(data: Path, checkpoint: Path, extra: list[str] = ()) -> str:
    """What fairseq-generate printed and logged."""
    from node_seq.fairseq import inprocess

    return inprocess.generate([str(data), "--path", str(checkpoint), "--gen-subset", "test", "--beam", "3",
                               "--max-tokens", "2000", "--post-process", "sentencepiece", "--num-workers", "0",
                               "--required-batch-size-multiple", "1", *extra])  # else fairseq drops a last, smaller batch
