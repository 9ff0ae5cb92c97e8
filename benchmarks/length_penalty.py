"""Length penalty chosen on the validation set, per model: test scores with each model's length calibrated.

    python -m benchmarks.length_penalty DATA_DIR OUT_DIR --model baseline-seed1=runs/q11/baseline/checkpoint_best.pt \\
        [--model NAME=CHECKPOINT ...] [--baseline NAME ...] [--lenpens 0.6,0.8,1,1.2,1.4,1.7,2] \\
        [-- fairseq-generate options]

Each model decodes the validation split (beam 5, as ``scripts/evaluate_multi30k.sh``) at every length
penalty (fairseq's ``--lenpen``: a hypothesis's score is its log-probability over length ** lenpen, so
a larger one favours longer outputs). The penalty with the highest validation BLEU is kept (a tie goes
to the one nearest 1, the recipe's), and the test split is decoded with it and with 1. Between seeds of
the Multi30k recipe BLEU moves mostly with output length (BENCHMARKS §5); this reading asks whether a
variant's gain survives once every model's length is tuned on data it is not tested on.

With ``--baseline NAME`` (repeatable; a model given with ``--model`` now or before) every other model's
tuned test output is tested against every baseline's tuned one, and its validation output at the
recipe's penalty against the baseline's: sacreBLEU's paired bootstrap of BLEU and chrF2 (``p_vs``,
``p_valid_vs``). The validation set is a second held-out set (checkpoints are chosen on its loss, not
its BLEU): a real gain on the test set should show there too.

Writes ``OUT_DIR/length_penalty.{json,md}`` and every decoding's log under ``OUT_DIR/logs/``. Models
already in ``OUT_DIR/length_penalty.json`` and not named again are kept, so models can be added one
call at a time; the p-values are recomputed over all of them each time. A model named again with the
same checkpoint and fairseq-generate options reuses the decodings it already has (a wider
``--lenpens`` decodes only the new penalties).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.multi30k_decode import command_line, decode, parse_model, reference_file
from benchmarks.quality_records import in_order, paired_bootstrap
from node_seq.text.score import score

DEFAULT_LENPENS = "0.6,0.8,1,1.2,1.4,1.7,2"
RECIPE_LENPEN = 1.0


def parse_lenpens(text: str) -> list[float]:
    """Comma-separated positive numbers, 1 among them; otherwise an error naming ``--lenpens``."""
    try:
        values = sorted({float(value) for value in text.split(",") if value.strip()})
    except ValueError:
        values = []
    if not values or values[0] <= 0 or RECIPE_LENPEN not in values:
        raise SystemExit(f"--lenpens: {text!r} must be comma-separated numbers > 0, 1 among them (the recipe's), "
                         f"e.g. {DEFAULT_LENPENS}")
    return values


def choose(curve: list[dict]) -> float:
    """The length penalty of the highest validation BLEU; of equal ones, the nearest to the recipe's 1."""
    best = max(point["bleu"] for point in curve)
    return min((point["lenpen"] for point in curve if point["bleu"] == best), key=lambda lp: abs(lp - RECIPE_LENPEN))


def log_path(out_dir: Path, model: str, split: str, lenpen: float) -> Path:
    return out_dir / "logs" / f"{model}.{split}.lenpen-{lenpen:g}.log"


def tune(data_dir: Path, out_dir: Path, name: str, checkpoint: Path, lenpens: list[float], extra: list[str], *,
         previous: dict | None = None) -> dict:
    """One model's validation curve, its chosen length penalty, and its test scores at that penalty and at 1.

    ``previous``: this model's saved row. A decoding it made is scored from its log instead of run again
    when the checkpoint and the fairseq-generate options are the same and the log is newer than the
    checkpoint, so a call that widens the grid decodes only the new penalties."""
    reuse = previous is not None and previous["checkpoint"] == str(checkpoint) \
        and previous.get("generate_options") == extra

    def decoded(split: str, lenpen: float) -> dict:
        log = log_path(out_dir, name, split, lenpen)
        if reuse and log.is_file() and log.stat().st_mtime > checkpoint.stat().st_mtime:
            return score(log, reference_file(data_dir, split))
        return decode(data_dir, checkpoint, log, [*extra, "--lenpen", f"{lenpen:g}"], split=split)

    curve = []
    for lenpen in lenpens:
        result = decoded("valid", lenpen)
        curve.append({"lenpen": lenpen, "bleu": result["bleu"], "length_ratio": result["length_ratio"]})
        print(f"{name} valid lenpen {lenpen:g}: BLEU {result['bleu']:.2f}, length ratio {result['length_ratio']:.3f}",
              flush=True)
    chosen = choose(curve)
    test = {lenpen: decoded("test", lenpen) for lenpen in dict.fromkeys([chosen, RECIPE_LENPEN])}
    keys = ("bleu", "chrf", "length_ratio")
    return {"model": name, "checkpoint": str(checkpoint), "generate_options": extra, "valid": curve, "lenpen": chosen,
            **{f"test_{key}": test[chosen][key] for key in keys},
            **{f"test_{key}_recipe": test[RECIPE_LENPEN][key] for key in keys}}


def significance(rows: list[dict], out_dir: Path, baselines: list[str], data_dir: Path) -> None:
    """For each non-baseline row against each baseline (sacreBLEU's paired bootstrap of BLEU and chrF2):
    ``p_vs``, the tuned test outputs; ``p_valid_vs``, the validation outputs at the recipe's penalty,
    a second held-out set on which a gain should show again (the penalty was not chosen there)."""
    for key, split, lenpen_of in (("p_vs", "test", lambda r: r["lenpen"]), ("p_valid_vs", "valid", lambda r: RECIPE_LENPEN)):
        references = [line.strip() for line in reference_file(data_dir, split).read_text(encoding="utf-8").splitlines()]
        outputs = {r["model"]: in_order(log_path(out_dir, r["model"], split, lenpen_of(r))) for r in rows}
        for r in rows:
            r[key] = {} if r["model"] in baselines else {
                baseline: paired_bootstrap(outputs[baseline], outputs[r["model"]], references) for baseline in baselines}


def markdown(rows: list[dict], baselines: list[str]) -> str:
    head = ["model", "lenpen (valid)", "valid BLEU at 1 -> tuned", "test BLEU at 1 -> tuned", "test chrF2 at 1 -> tuned",
            "test length ratio at 1 -> tuned",
            *(f"p vs {b}, test tuned (BLEU / chrF2)" for b in baselines),
            *(f"p vs {b}, valid at 1 (BLEU / chrF2)" for b in baselines)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        at_one = next(point["bleu"] for point in r["valid"] if point["lenpen"] == RECIPE_LENPEN)
        at_chosen = next(point["bleu"] for point in r["valid"] if point["lenpen"] == r["lenpen"])
        cells = [r["model"], f"{r['lenpen']:g}", f"{at_one:.2f} -> {at_chosen:.2f}",
                 f"{r['test_bleu_recipe']:.2f} -> {r['test_bleu']:.2f}",
                 f"{r['test_chrf_recipe']:.2f} -> {r['test_chrf']:.2f}",
                 f"{r['test_length_ratio_recipe']:.3f} -> {r['test_length_ratio']:.3f}"]
        for key in ("p_vs", "p_valid_vs"):
            cells += [f"{r[key][b]['bleu']} / {r[key][b]['chrf']}" if b in r[key] else "-" for b in baselines]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser, argv, extra = command_line(__doc__.splitlines()[0], argv)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME",
                        help="a model the others are tested against (repeatable)")
    parser.add_argument("--lenpens", default=DEFAULT_LENPENS, help=f"comma-separated (default {DEFAULT_LENPENS})")
    args = parser.parse_args(argv)
    lenpens = parse_lenpens(args.lenpens)
    models = [parse_model(m) for m in args.model]
    for split in ("valid", "test"):
        if not reference_file(args.data_dir, split).is_file():
            raise SystemExit(f"DATA_DIR: no {reference_file(args.data_dir, split)}, the {split} references")
    saved = args.out_dir / "length_penalty.json"
    named = {name for name, _ in models}
    previous = {r["model"]: r for r in json.loads(saved.read_text(encoding="utf-8"))} if saved.is_file() else {}
    rows = [r for name, r in previous.items() if name not in named]
    known = [r["model"] for r in rows] + [name for name, _ in models]
    unknown = [b for b in args.baseline if b not in known]
    if unknown or not known:
        raise SystemExit(f"--baseline: {unknown[0]!r} is not a model; the models are {', '.join(known)}" if unknown
                         else "--model: give at least one NAME=CHECKPOINT")
    (args.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    for name, checkpoint in models:
        rows.append(tune(args.data_dir, args.out_dir, name, checkpoint, lenpens, extra, previous=previous.get(name)))
    significance(rows, args.out_dir, args.baseline, args.data_dir)
    saved.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    table = markdown(rows, args.baseline)
    (args.out_dir / "length_penalty.md").write_text(table, encoding="utf-8")
    print(table, end="")
    return rows


if __name__ == "__main__":
    main()
