"""Collect fairseq train + generate runs (``benchmarks/multi30k_quality.sh``, ``benchmarks/kinetic.sh``)
into one Markdown table.

    python -m benchmarks.quality_report RUNS_DIR VARIANT [VARIANT ...]

Each variant directory holds fairseq-train's log (``train.log``) and the scorer's output
(``score-test.txt``); the table reads parameters, training wall time, the last epoch's training NFE
and validation loss from the first, and BLEU and decoding NFE from the second.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PARAMS = re.compile(r"num\. shared model params: ([0-9,]+)")
_WALL = re.compile(r"done training in ([0-9.]+) seconds")
_TRAIN_EPOCH = re.compile(r"\| train \| epoch (\d+) \|.*")
_VALID_EPOCH = re.compile(r"\| valid \| epoch (\d+) \|.*")
_FIELD = r"\| {} ([0-9.]+)"
_SCORE = re.compile(r"^(sacreBLEU|NFE/sentence)\s+([0-9.]+)", re.MULTILINE)


def _field(line: str, name: str) -> str:
    found = re.search(_FIELD.format(name), line)
    return found.group(1) if found else "-"


def summarize(variant_dir: Path) -> dict:
    log = (variant_dir / "train.log").read_text(encoding="utf-8")
    params, wall = _PARAMS.search(log), _WALL.search(log)
    train_lines, valid_lines = _TRAIN_EPOCH.findall(log), _VALID_EPOCH.finditer(log)
    last_train = [m.group(0) for m in _TRAIN_EPOCH.finditer(log)][-1:] or [""]
    last_valid = [m.group(0) for m in valid_lines][-1:] or [""]
    scores = dict(_SCORE.findall((variant_dir / "score-test.txt").read_text(encoding="utf-8")))
    return {
        "variant": variant_dir.name,
        "params": params.group(1) if params else "-",
        "epochs": str(int(train_lines[-1])) if train_lines else "-",
        "train_min": f"{float(wall.group(1)) / 60:.1f}" if wall else "-",
        "train_nfe_f": _field(last_train[0], "nfe_f"),
        "train_kinetic": _field(last_train[0], "node_kinetic"),
        "valid_loss": _field(last_valid[0], "loss"),
        "bleu": scores.get("sacreBLEU", "-"),
        "decode_nfe": scores.get("NFE/sentence", "-"),
    }


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit("usage: " + __doc__.split("\n\n")[1].strip())
    runs = Path(argv[0])
    rows = [summarize(runs / name) for name in argv[1:]]
    header = ["variant", "params", "epochs", "train_min", "train_nfe_f", "train_kinetic", "valid_loss", "bleu",
              "decode_nfe"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
