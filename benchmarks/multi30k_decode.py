"""A trained translation model decoded in this process with the recipe's fairseq-generate options, and scored.

Shared by the readings that decode one checkpoint many ways (``benchmarks.elastic_depth``: other
solvers; ``benchmarks.length_penalty``: other length penalties), so both decode exactly as
``scripts/evaluate_multi30k.sh`` does (beam 5, sentencepiece removed, no batch dropped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GENERATE = ["--beam", "5", "--max-tokens", "8000", "--post-process", "sentencepiece", "--num-workers", "0",
            "--required-batch-size-multiple", "1"]


def command_line(description: str, argv: list[str] | None) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """A reading's parser (``DATA_DIR OUT_DIR`` already added), its own arguments (``argv``, else the
    command line's), and those after ``--``, which go to fairseq-generate unchanged."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=description, epilog="Arguments after -- go to fairseq-generate.")
    parser.add_argument("data_dir", type=Path, help="prepared data (bin/ and raw/), e.g. runs/multi30k")
    parser.add_argument("out_dir", type=Path)
    return parser, own, extra


def parse_model(text: str) -> tuple[str, Path]:
    """``NAME=CHECKPOINT`` of a ``--model`` option, the checkpoint an existing file."""
    name, sep, path = text.partition("=")
    if not sep or not name or not Path(path).is_file():
        raise SystemExit(f"--model: {text!r} must be NAME=CHECKPOINT, an existing checkpoint file")
    return name, Path(path)


def target_language(data_dir: Path) -> str:
    """The target suffix of the binarised test split (``test.de-en.en.bin`` -> ``en``)."""
    found = sorted((data_dir / "bin").glob("test.*-*.*.bin"))
    if not found:
        raise SystemExit(f"DATA_DIR: no binarised test split in {data_dir / 'bin'}")
    source_target, language = found[0].name.split(".")[1:3]
    return language if source_target.endswith(f"-{language}") else source_target.split("-")[1]


def reference_file(data_dir: Path, split: str) -> Path:
    """The raw references of ``split`` that a decoding is scored against: ``DATA_DIR/raw/<split>.<target>``."""
    return data_dir / "raw" / f"{split}.{target_language(data_dir)}"


def decode(data_dir: Path, checkpoint: Path, log: Path, extra: list[str], *, split: str = "test",
           overrides: dict | None = None) -> dict:
    """One fairseq-generate run of ``split``, its output in ``log``, scored against
    ``DATA_DIR/raw/<split>.<target>``: BLEU and its parts, chrF2, exact match and NFE per sentence."""
    from node_seq.fairseq import inprocess
    from node_seq.text.score import score

    argv = [str(data_dir / "bin"), "--path", str(checkpoint), "--gen-subset", split, *GENERATE, *extra]
    if overrides:
        argv += ["--model-overrides", repr(overrides)]
    log.write_text(inprocess.generate(argv), encoding="utf-8")
    return score(log, reference_file(data_dir, split))
