"""fairseq's command lines, run in-process (node_seq.fairseq.inprocess), with tiny models on the numbers task."""

from __future__ import annotations

from pathlib import Path

import torch

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


def summary_lines(*messages: str) -> list[str]:
    """What fairseq-generate's logger writes when it logs ``messages`` (node-seq's NFE line included)."""
    import io
    import logging

    logger = logging.getLogger("fairseq_cli.generate")
    stream, level = io.StringIO(), logger.level
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for message in messages:
            logger.info(message)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return stream.getvalue().splitlines()


def fairseq_generate(data: Path, checkpoint: Path, extra: list[str] = ()) -> str:
    """What fairseq-generate printed and logged."""
    from node_seq.fairseq import inprocess

    return inprocess.generate([str(data), "--path", str(checkpoint), "--gen-subset", "test", "--beam", "3",
                               "--max-tokens", "2000", "--post-process", "sentencepiece", "--num-workers", "0",
                               "--required-batch-size-multiple", "1", *extra])  # else fairseq drops a last, smaller batch


def model_of(data: Path, control: str, extra: list[str] = ()):
    """An untrained tiny model with dopri5 on both sides under ``control`` (``--node-step-control``), its
    fields made larger so that solves take several steps; and its task."""
    from fairseq import options, tasks

    import node_seq.fairseq  # noqa: F401

    torch.manual_seed(0)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), *TINY, "--node-method", "dopri5", "--node-rtol", "1e-2", "--node-step-control", control, *extra])
    task = tasks.setup_task(args)
    model = task.build_model(args).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".field." in name and parameter.dim() == 2:
                parameter.mul_(4.0)
            elif name.endswith("embed_tokens.weight"):
                parameter.normal_(0, 1)
    return model, task


def batch(task):
    """A source batch of the task's words: row 1, the sentence, left-padded as fairseq pads sources; row 0
    longer. Returns tokens, lengths and the short sentence's length."""
    dictionary = task.source_dictionary
    words = [dictionary[i] for i in range(dictionary.nspecial, len(dictionary))]
    pad, eos = dictionary.pad(), dictionary.eos()
    long = [dictionary.index(w) for w in words[:9]] + [eos]
    short = [dictionary.index(w) for w in words[12:16]] + [eos]
    tokens = torch.tensor([long, [pad] * (len(long) - len(short)) + short])
    return tokens, torch.tensor([len(long), len(short)]), len(short)


def relative(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())
