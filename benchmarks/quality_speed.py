"""Training speed of the Multi30k variants: words/s of short runs, each against the baseline of its round.

    python -m benchmarks.quality_speed SPEED_DIR VARIANT [VARIANT ...] [--out PREFIX] [--command TEXT]

``SPEED_DIR/<variant>/round-<k>.log`` is what ``benchmarks/multi30k_quality.sh --speed UPDATES``
writes: fairseq-train's log of a short run of the variant's full recipe, logged every 10 updates.
A run's speed is the median words/s of its log intervals after the first (the warm-up); a variant's
ratio is its speed over the baseline's in the same round, and the table gives the median over
rounds, so a machine that was slower in one round than another does not bias the ratio.
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from .common import machine, markdown_table, write_outputs

_INTERVAL = re.compile(r"\| train_inner \|.*")
_ROUND = re.compile(r"round-(\d+)\.log")


def _field(line: str, name: str) -> float | None:
    found = re.search(rf"\b{name}=([0-9.]+)", line)
    return float(found.group(1)) if found else None


def run_speed(log: Path) -> tuple[float, float]:
    """(median words/s after the first interval, forward NFE per update of the last interval)."""
    intervals = _INTERVAL.findall(log.read_text(encoding="utf-8"))
    if len(intervals) < 2:
        raise SystemExit(f"{log}: fewer than two logged intervals; give --speed at least 20 updates")
    return statistics.median(_field(line, "wps") for line in intervals[1:]), _field(intervals[-1], "nfe_f") or 0.0


def speeds(speed_dir: Path, variants: list[str]) -> dict[str, dict[int, tuple[float, float]]]:
    """variant -> round -> (words/s, NFE per update)."""
    found = {}
    for name in variants:
        logs = {int(_ROUND.fullmatch(p.name).group(1)): p for p in (speed_dir / name).glob("round-*.log")}
        if not logs:
            raise SystemExit(f"SPEED_DIR: no round-*.log in {speed_dir / name}")
        found[name] = {k: run_speed(path) for k, path in sorted(logs.items())}
    return found


def rows(found: dict[str, dict[int, tuple[float, float]]], baseline: str = "baseline") -> list[dict]:
    out = []
    for name, rounds in found.items():
        row = {"variant": name, "rounds": len(rounds), "words_per_s": statistics.median(w for w, _ in rounds.values()),
               "nfe_f_per_update": next(iter(rounds.values()))[1], "ratio_to_baseline": None}
        if baseline in found:
            shared = [k for k in rounds if k in found[baseline]]
            if shared:
                row["ratio_to_baseline"] = statistics.median(rounds[k][0] / found[baseline][k][0] for k in shared)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("speed_dir", type=Path)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--out", help="path prefix for <out>.json / .md")
    parser.add_argument("--command", default=None, help="the command that made the runs (for the .md)")
    args = parser.parse_args(argv)
    table_rows = rows(speeds(args.speed_dir, args.variants))
    table = markdown_table(["variant", "rounds", "train words/s (median)", "ratio to baseline", "forward NFE/update"],
                           [[r["variant"], r["rounds"], r["words_per_s"],
                             "-" if r["ratio_to_baseline"] is None else r["ratio_to_baseline"],
                             r["nfe_f_per_update"] or "-"] for r in table_rows])
    if args.out:
        write_outputs(args.out, command=args.command or f"python -m benchmarks.quality_speed {args.speed_dir}",
                      meta={"machine": machine()}, rows=table_rows, table=table)
    print(table)
    return table_rows


if __name__ == "__main__":
    main()
