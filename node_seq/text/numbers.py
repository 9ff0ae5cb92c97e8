"""The embedded task: read a number digit by digit, write it out in English words.

``4 0 7 1 3`` -> ``forty thousand seven hundred thirteen``. It is generated deterministically
from a seed, needs no download, has a real long-range structure (a digit's word depends on its
position and on its neighbours: "1 3" is "thirteen", "3 1" is "thirty one") and a small model
learns it on a CPU in minutes, so BLEU and exact match move visibly.
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SPLITS = {"train": 20_000, "valid": 500, "test": 1_000}
MAX_DIGITS = 6


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(TENS[n // 10])
        n %= 10
        if n:
            words.append(ONES[n])
    elif n or not words:
        words.append(ONES[n])
    return words


def number_to_words(n: int) -> str:
    """English words for ``0 <= n < 10**6``."""
    if not 0 <= n < 10 ** MAX_DIGITS:
        raise ValueError(f"numbers must be in [0, {10 ** MAX_DIGITS}), got {n}")
    thousands, rest = divmod(n, 1000)
    words = (_below_thousand(thousands) + ["thousand"]) if thousands else []
    if rest or not thousands:
        words += _below_thousand(rest)
    return " ".join(words)


def sample_numbers(count: int, rng: random.Random, exclude: set[int], *, min_digits: int = 1,
                   max_digits: int = MAX_DIGITS) -> list[int]:
    """Distinct numbers, as many of each length (uniform over the number of digits)."""
    chosen: list[int] = []
    while len(chosen) < count:
        digits = rng.randint(min_digits, max_digits)
        n = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits)
        if n not in exclude:
            exclude.add(n)
            chosen.append(n)
    return chosen


def write_task(out_dir: str | Path, *, seed: int = 1, sizes: dict[str, int] | None = None,
               max_digits: int = MAX_DIGITS) -> dict[str, int]:
    """Write ``{train,valid,test}.{src,tgt}`` (one sentence per line) and return the split sizes.

    The splits never share a number, so the test set measures generalisation. The 100 numbers
    below 100 are the words everything else is made of: all of them are in the training split,
    and the held-out splits draw from 3 to ``max_digits`` digits (3: numbers below 1000, a task a
    tiny model learns in seconds).
    """
    out = Path(out_dir)
    rng, seen = random.Random(seed), set(range(100))
    sizes = dict(sizes or SPLITS)
    if sizes["train"] < 100:
        raise ValueError(f"the training split needs at least the 100 numbers below 100, got {sizes['train']}")
    if not 3 <= max_digits <= MAX_DIGITS:
        raise ValueError(f"max_digits must be in [3, {MAX_DIGITS}], got {max_digits}")
    if sum(sizes.values()) > 10 ** max_digits:
        raise ValueError(f"{sum(sizes.values())} sentences asked for, but there are only {10 ** max_digits} "
                         f"numbers of at most {max_digits} digits")
    out.mkdir(parents=True, exist_ok=True)
    for split in ("test", "valid", "train"):
        if split == "train":
            numbers = list(range(100)) + sample_numbers(sizes[split] - 100, rng, seen, max_digits=max_digits)
            rng.shuffle(numbers)
        else:
            numbers = sample_numbers(sizes[split], rng, seen, min_digits=3, max_digits=max_digits)
        (out / f"{split}.src").write_text("".join(" ".join(str(n)) + "\n" for n in numbers))
        (out / f"{split}.tgt").write_text("".join(number_to_words(n) + "\n" for n in numbers))
    return sizes


def prepare_numbers(out_dir: str | Path, *, sizes: dict[str, int], vocab_size: int = 128, seed: int = 1,
                    max_digits: int = MAX_DIGITS, reuse: bool = False) -> Path:
    """The task written to ``OUT/raw_task`` and prepared for fairseq in ``OUT/data`` (BPE, binaries,
    ``raw/`` references), as ``scripts/demo.sh`` does with two commands; returns ``OUT/data/bin``.

    The fixture of the tests and the benchmarks. ``reuse``: keep what an earlier call wrote to ``OUT``
    (name ``OUT`` after the sizes). fairseq-preprocess's printing is kept out of stdout.
    """
    from .prepare import prepare

    out = Path(out_dir)
    if reuse and (out / "data" / "bin" / "dict.src.txt").exists():
        return out / "data" / "bin"
    write_task(out / "raw_task", seed=seed, sizes=sizes, max_digits=max_digits)
    with contextlib.redirect_stdout(io.StringIO()):
        return prepare(out / "raw_task", out / "data", src="src", tgt="tgt",
                       splits={"train": "train", "valid": "valid", "test": "test"}, vocab_size=vocab_size)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=SPLITS["train"])
    args = parser.parse_args(argv)
    if args.train_size < 100:
        parser.error(f"--train-size: must be >= 100 (every number below 100 is in it), got {args.train_size}")
    sizes = write_task(args.out_dir, seed=args.seed, sizes={**SPLITS, "train": args.train_size})
    print(f"wrote {sizes} to {args.out_dir}")


if __name__ == "__main__":
    main()
