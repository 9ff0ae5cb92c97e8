"""Prepare one side of a corpus as language-model data: the project's BPE, fairseq binaries, raw text.

    python -m node_seq.text.prepare_lm RAW_DIR OUT_DIR --lang en \\
        --splits train=train,valid=val,test=test_2016_flickr --vocab-size 4000

reads ``RAW_DIR/{name}.{lang}`` (plain or ``.gz``) and writes to ``OUT_DIR``: ``raw/{split}.{lang}``
(the text), ``tokenizer.json`` (the BPE of :mod:`node_seq.text.tokenizer`, learnt on the training
split, or ``--tokenizer`` reused), ``bpe/{split}.{lang}`` and ``bin/`` (``fairseq-preprocess
--only-source``: ``dict.txt``, ``train.bin``, ..., and a copy of ``tokenizer.json``), ready for
``fairseq-train OUT_DIR/bin --task language_modeling``.
"""

from __future__ import annotations

from pathlib import Path

from .prepare import _read_raw, binarize, check_lines, check_split_names, checked_splits, corpus_parser, write_raw
from .tokenizer import encode_file, load_tokenizer, train_tokenizer


def prepare_lm(raw_dir: str | Path, out_dir: str | Path, *, lang: str, splits: dict[str, str], vocab_size: int,
               tokenizer: str | Path | None = None, workers: int = 1) -> Path:
    """Returns ``OUT_DIR/bin``. Every input is read and checked before anything is written."""
    check_split_names(splits)
    raw_dir, out = Path(raw_dir), Path(out_dir)
    texts = {split: _read_raw(raw_dir, name, lang) for split, name in splits.items()}
    for split, text in texts.items():
        check_lines(text, f"{split}.{lang}")
    for sub in ("raw", "bpe"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        write_raw(out, split, lang, text)
    bpe = load_tokenizer(tokenizer) if tokenizer else train_tokenizer([out / "raw" / f"train.{lang}"],
                                                                         vocab_size=vocab_size)
    bpe.save(str(out / "tokenizer.json"))
    for split in splits:
        encode_file(bpe, out / "raw" / f"{split}.{lang}", out / "bpe" / f"{split}.{lang}")

    return binarize(out, ["--only-source"], lambda split: f"{split}.{lang}", splits, workers)


def main(argv: list[str] | None = None) -> None:
    parser = corpus_parser(__doc__.splitlines()[0])
    parser.add_argument("--lang", required=True, help="the side to model: files RAW_DIR/{name}.{lang}")
    parser.add_argument("--tokenizer", default=None, help="reuse this tokenizer.json instead of learning a BPE")
    args = parser.parse_args(argv)
    splits = checked_splits(parser, args)
    if args.tokenizer and not Path(args.tokenizer).is_file():
        parser.error(f"--tokenizer: not found: {args.tokenizer}")
    try:
        bin_dir = prepare_lm(args.raw_dir, args.out_dir, lang=args.lang, splits=splits, vocab_size=args.vocab_size,
                             tokenizer=args.tokenizer, workers=args.workers)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(f"fairseq LM data in {bin_dir}")


if __name__ == "__main__":
    main()
