"""Every seed of a variant against every seed of the baseline, from the kept hypotheses.

    python -m benchmarks.quality_seeds --references runs/multi30k/raw/test.en \\
        [--results benchmarks/results/multi30k_quality.json] [--baseline baseline] [--out FILE.md]

A record's ``p_vs_baseline`` tests one seed against the baseline of the same seed. A claim over
seeds needs more: this pairs each seed of each variant with each seed of the baseline (the
hypotheses ``benchmarks.quality_records`` keeps beside the records) and runs sacreBLEU's paired
bootstrap on every pair, so a table row says in how many of those pairs the variant was
significantly better (p < 0.05 and a higher score), per metric.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from benchmarks.quality_records import RESULTS, hypotheses_file, paired_bootstrap

SIGNIFICANT = 0.05


def pair_table(records: list[dict], results: Path, references: list[str], baseline: str) -> list[dict]:
    """One row per variant: its seeds' scores and the bootstrap of every (variant seed, baseline
    seed) pair. Variants whose hypotheses were not kept are left out."""
    by_variant: dict[str, list[dict]] = {}
    for r in records:
        if hypotheses_file(results, r["variant"], r["seed"]).is_file():
            by_variant.setdefault(r["variant"], []).append(r)
    if baseline not in by_variant:
        raise SystemExit(f"--baseline: no kept hypotheses of '{baseline}' beside {results}")

    kept = {(r["variant"], r["seed"]): hypotheses_file(results, r["variant"], r["seed"]).read_text(encoding="utf-8")
            .splitlines() for runs in by_variant.values() for r in runs}  # each file read once
    base_runs = sorted(by_variant[baseline], key=lambda r: r["seed"])
    base_bleu, base_chrf = mean(r["bleu"] for r in base_runs), mean(r["chrf"] for r in base_runs)
    rows = []
    for variant, runs in by_variant.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        row = {"variant": variant, "seeds": [r["seed"] for r in runs], "bleu": [r["bleu"] for r in runs],
               "chrf": [r["chrf"] for r in runs]}
        if variant != baseline:
            tests = [(r, b, paired_bootstrap(kept[b["variant"], b["seed"]], kept[r["variant"], r["seed"]], references))
                     for r in runs for b in base_runs]
            row.update(
                delta_bleu=round(mean(row["bleu"]) - base_bleu, 2), delta_chrf=round(mean(row["chrf"]) - base_chrf, 2),
                pairs=len(tests),
                better_bleu=sum(p["bleu"] < SIGNIFICANT and r["bleu"] > b["bleu"] for r, b, p in tests),
                better_chrf=sum(p["chrf"] < SIGNIFICANT and r["chrf"] > b["chrf"] for r, b, p in tests),
                max_p_bleu=max(p["bleu"] for *_, p in tests), max_p_chrf=max(p["chrf"] for *_, p in tests))
        rows.append(row)
    return rows


def markdown(rows: list[dict], baseline: str) -> str:
    out = [f"| variant | seeds | sacreBLEU per seed (mean) | chrF2 per seed (mean) | vs `{baseline}` (mean) | "
           "pairs better, p < 0.05: BLEU / chrF2 | largest p: BLEU / chrF2 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = [f"{', '.join(f'{v:.2f}' for v in r[k])} ({mean(r[k]):.2f})" for k in ("bleu", "chrf")]
        seeds = ", ".join(map(str, r["seeds"]))
        if "pairs" not in r:
            out.append(f"| `{r['variant']}` | {seeds} | {scores[0]} | {scores[1]} | - | - | - |")
            continue
        out.append(f"| `{r['variant']}` | {seeds} | {scores[0]} | {scores[1]} | BLEU {r['delta_bleu']:+.2f}, "
                   f"chrF2 {r['delta_chrf']:+.2f} | {r['better_bleu']}/{r['pairs']} / {r['better_chrf']}/{r['pairs']} "
                   f"| {r['max_p_bleu']:.3f} / {r['max_p_chrf']:.3f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=Path, required=True, help="raw test references, e.g. raw/test.en")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--baseline", default="baseline", help="the variant every other one is tested against")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    for flag, path in (("--references", args.references), ("--results", args.results)):
        if not path.is_file():
            raise SystemExit(f"{flag}: {path} not found")
    references = [line.strip() for line in args.references.read_text(encoding="utf-8").splitlines()]
    rows = pair_table(json.loads(args.results.read_text(encoding="utf-8")), args.results, references, args.baseline)
    table = markdown(rows, args.baseline)
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    print(table, end="")
    return rows


if __name__ == "__main__":
    main()
