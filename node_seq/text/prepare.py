"""Prepare a parallel corpus for training: one subword tokenizer, fairseq binaries, references.

    python -m node_seq.text.prepare RAW_DIR OUT_DIR --src de --tgt en \
        --splits train=train,valid=val,test=test_2016_flickr --vocab-size 8000

reads ``RAW_DIR/{name}.{lang}`` (plain or ``.gz``), and writes to ``OUT_DIR``:

* ``raw/{split}.{lang}``: the untokenized text (references for sacrebleu);
* ``tokenizer.json``: the joint BPE (see :mod:`node_seq.text.tokenizer`), learnt on the training split;
* ``bpe/{split}.{lang}``: the text as pieces; ``bin/``: ``fairseq-preprocess`` output with a joined
  dictionary (``bin/dict.{lang}.txt``), ready for ``fairseq-train OUT_DIR/bin``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import re
import shutil
from pathlib import Path
from typing import Callable

from .tokenizer import encode_file, train_tokenizer


def _read_raw(raw_dir: Path, name: str, lang: str) -> str:
    for path in (raw_dir / f"{name}.{lang}", raw_dir / f"{name}.{lang}.gz"):
        if path.exists():
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                return f.read()
    raise FileNotFoundError(f"missing split file {raw_dir / f'{name}.{lang}'}[.gz]")


# fairseq-preprocess names the files of ``--validpref a,b,c`` valid, valid1, valid2 (and so for test):
# several evaluation sets, e.g. Multi30k's test=test_2016_flickr,test1=test_2017_flickr.
SPLIT_NAME = re.compile(r"train|(?P<kind>valid|test)(?P<number>[1-9][0-9]*)?")


def check_split_names(names) -> None:
    """Refuse names fairseq-preprocess cannot write, and numbered sets with a gap before them
    (fairseq numbers them by position, so ``test2`` without ``test1`` would come out as ``test1``)."""
    unknown = sorted(name for name in names if not SPLIT_NAME.fullmatch(name))
    if unknown:
        raise ValueError(f"--splits: split names are train, valid, test, and valid1, valid2, ..., test1, test2, ... "
                         f"for more evaluation sets; got {unknown}")
    for name in names:
        match = SPLIT_NAME.fullmatch(name)
        if match["number"]:
            number = int(match["number"])
            previous = f"{match['kind']}{number - 1 if number > 1 else ''}"
            if previous not in names:
                raise ValueError(f"--splits: {name} needs {previous} (fairseq numbers the extra sets in order: "
                                 f"{match['kind']}, {match['kind']}1, {match['kind']}2, ...)")


def evaluation_sets(names, kind: str) -> list[str]:
    """``kind`` ("valid" or "test") and its numbered sets among ``names``, in fairseq's order."""
    return sorted((name for name in names if (match := SPLIT_NAME.fullmatch(name)) and match["kind"] == kind),
                  key=lambda name: int(name[len(kind):] or 0))


def parse_splits(text: str) -> dict[str, str]:
    splits = dict(part.split("=", 1) if "=" in part else (part, part) for part in text.split(",") if part)
    if "train" not in splits:
        raise ValueError(f"--splits: needs a train split, got {text!r}")
    check_split_names(splits)
    return splits


def check_lines(text: str, where: str) -> None:
    """Refuse an empty file, or name the first empty line: every line must be a sentence."""
    lines = text.splitlines()
    if not lines or any(not line.strip() for line in lines):
        raise ValueError(f"{where}: empty file or empty lines (line "
                         f"{next((n + 1 for n, line in enumerate(lines) if not line.strip()), 1)})")


def write_raw(out: Path, split: str, lang: str, text: str) -> None:
    (out / "raw" / f"{split}.{lang}").write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


def binarize(out: Path, argv: list[str], piece_file: Callable[[str], str], splits, workers: int) -> Path:
    """``fairseq-preprocess`` of the pieces in ``out/bpe`` into a fresh ``out/bin``, with a copy of
    ``out/tokenizer.json``; ``piece_file(split)`` names a split's file (or prefix) in ``out/bpe``."""
    from fairseq import options
    from fairseq_cli import preprocess

    if (out / "bin").exists():
        shutil.rmtree(out / "bin")
    argv = [*argv, "--destdir", str(out / "bin"), "--workers", str(workers),
            "--trainpref", str(out / "bpe" / piece_file("train"))]
    for kind in ("valid", "test"):
        if sets := evaluation_sets(splits, kind):
            argv += [f"--{kind}pref", ",".join(str(out / "bpe" / piece_file(split)) for split in sets)]
    with contextlib.redirect_stdout(io.StringIO()):  # fairseq prints its whole namespace
        preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    shutil.copy(out / "tokenizer.json", out / "bin" / "tokenizer.json")
    return out / "bin"


def corpus_parser(description: str) -> argparse.ArgumentParser:
    """The options both preparations take; :func:`checked_splits` checks them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("raw_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--splits", default="train,valid,test",
                        help="split=file-stem pairs, e.g. valid=val; more test sets as test1, test2, ... (fairseq's names)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size when learning one")
    parser.add_argument("--workers", type=int, default=1)
    return parser


def checked_splits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The parsed ``--splits``, after checking the options of :func:`corpus_parser` (errors exit via ``parser``)."""
    try:
        splits = parse_splits(args.splits)
    except ValueError as error:
        parser.error(str(error))
    if args.vocab_size < 8:
        parser.error(f"--vocab-size: must be >= 8, got {args.vocab_size}")
    if not Path(args.raw_dir).is_dir():
        parser.error(f"raw_dir: not a directory: {args.raw_dir}")
    return splits


def prepare(raw_dir: str | Path, out_dir: str | Path, *, src: str, tgt: str, splits: dict[str, str],
            vocab_size: int, workers: int = 1) -> Path:
    check_split_names(splits)
    raw_dir, out = Path(raw_dir), Path(out_dir)
    texts = {(split, lang): _read_raw(raw_dir, name, lang) for split, name in splits.items() for lang in (src, tgt)}
    for (split, lang), text in texts.items():  # every file is read (and checked) before anything is written
        check_lines(text, f"{split}.{lang}")
    counts = {split: len(texts[(split, src)].splitlines()) for split in splits}
    for split in splits:
        if len(texts[(split, tgt)].splitlines()) != counts[split]:
            raise ValueError(f"{split}: {counts[split]} {src} lines but {len(texts[(split, tgt)].splitlines())} {tgt} lines")

    for sub in ("raw", "bpe"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for (split, lang), text in texts.items():
        write_raw(out, split, lang, text)
    tokenizer = train_tokenizer([out / "raw" / f"train.{lang}" for lang in (src, tgt)], vocab_size=vocab_size)
    tokenizer.save(str(out / "tokenizer.json"))
    for split in splits:
        for lang in (src, tgt):
            encode_file(tokenizer, out / "raw" / f"{split}.{lang}", out / "bpe" / f"{split}.{lang}")

    return binarize(out, ["--source-lang", src, "--target-lang", tgt, "--joined-dictionary"], lambda split: split,
                    splits, workers)


def main(argv: list[str] | None = None) -> None:
    parser = corpus_parser("Prepare a parallel corpus for node-seq (fairseq + HF).")
    parser.add_argument("--src", required=True)
    parser.add_argument("--tgt", required=True)
    args = parser.parse_args(argv)
    splits = checked_splits(parser, args)
    bin_dir = prepare(args.raw_dir, args.out_dir, src=args.src, tgt=args.tgt, splits=splits,
                      vocab_size=args.vocab_size, workers=args.workers)
    print(f"fairseq data in {bin_dir}")


if __name__ == "__main__":
    main()
