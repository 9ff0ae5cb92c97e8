"""Run fairseq's own command-line entry points in-process on a tiny generated task."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "node_transformer_tiny", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
        "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-layers", "1",
        "--decoder-layers", "1", "--share-all-embeddings"]
TRAIN = ["--optimizer", "adam", "--lr", "1e-3", "--criterion", "label_smoothed_cross_entropy",
         "--max-tokens", "512", "--num-workers", "0", "--log-format", "json", "--log-interval", "1",
         "--seed", "1", "--no-progress-bar"]


def make_task(root: Path, train_size: int = 120) -> Path:
    from node_seq.text.numbers import write_task
    from node_seq.text.prepare import prepare

    write_task(root / "raw_task", sizes={"train": train_size, "valid": 20, "test": 12})
    with contextlib.redirect_stdout(io.StringIO()):
        return prepare(root / "raw_task", root / "data", src="src", tgt="tgt",
                       splits={"train": "train", "valid": "valid", "test": "test"}, vocab_size=48)


def parse(argv: list[str], parser_fn):
    from fairseq import options

    return options.parse_args_and_arch(parser_fn(), argv)


def fairseq_train(data: Path, save_dir: Path, extra: list[str], *, log_file: Path | None = None):
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train

    argv = [str(data), "--user-dir", str(REPO / "user_dir"), *TINY, *TRAIN, "--save-dir", str(save_dir), *extra]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    args = parse(argv, options.get_training_parser)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # fairseq logs its metrics at INFO; pytest leaves the root at WARNING
    try:
        train.main(convert_namespace_to_omegaconf(args))
    finally:
        root.setLevel(level)
        _drop_file_handlers()


def fairseq_generate(data: Path, checkpoint: Path, extra: list[str] = ()) -> str:
    """Run fairseq-generate; return what it printed and logged."""
    from fairseq import options
    from fairseq_cli import generate

    argv = [str(data), "--user-dir", str(REPO / "user_dir"), "--path", str(checkpoint), "--gen-subset", "test",
            "--beam", "3", "--max-tokens", "2000", "--post-process", "sentencepiece", "--num-workers", "0",
            "--required-batch-size-multiple", "1", *extra]  # else fairseq drops a last, smaller batch
    args = parse(argv, options.get_generation_parser)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("fairseq_cli.generate")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stream):
            generate.main(args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _drop_file_handlers() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
