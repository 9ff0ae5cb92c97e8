"""Row compaction: decoding words/s of an adaptive model under four solvers of the same weights, side by side.

    python -m benchmarks.row_compaction DATA_DIR OUT_DIR --model CHECKPOINT \\
        [--batch-sizes 1,8,32,128] [--rounds 3] [--fixed rk4:2] [--rtol RTOL] [--quick] [-- fairseq-generate options]

CHECKPOINT is a fairseq translation model with adaptive ODE blocks (dopri5 or bosh3). DATA_DIR's test
split is decoded as ``scripts/evaluate_multi30k.sh`` decodes it (beam 5, :mod:`benchmarks.multi30k_decode`)
at each ``--batch-size``, with the checkpoint's solver overridden four ways:

* ``batch``: one step-size controller for the whole batch (``--node-step-control batch``);
* ``sequence``: each sentence its own steps, every sentence evaluated until the last is done
  (``--no-node-compact-rows``);
* ``sequence, compacted``: the same steps, the field evaluated only on the sentences still stepping
  (the default); its translations must be those of ``sequence``;
* the fixed grid ``--fixed`` (``METHOD:STEPS``) of the same weights.

``--rtol`` decodes the three adaptive solvers at that tolerance (``atol = rtol / 10``, as
``benchmarks.elastic_depth``'s ``METHOD@RTOL``) instead of the checkpoint's: a model whose every
sentence takes one step at its trained tolerance leaves compaction nothing to skip.

Every round decodes every (batch size, solver) once, the order of the solvers rotating from round
to round; a solver's speed is its median words/s (detokenized hypothesis words over fairseq's own
generation time) and its ratio to ``sequence`` is the median of the per-round ratios, so load that
drifts across rounds cancels. Each row also holds BLEU/chrF2, NFE per sentence (fairseq-generate's
``NODE NFE`` line) and rows evaluated per sentence, the work actually done (counted at every field
evaluation through :func:`node_seq.ode.observe_evaluations`; a decoder's rows are its hypotheses,
beam times sentences). Writes ``--out`` (default ``benchmarks/results/row_compaction.json``) and each
decoding's log under ``OUT_DIR/logs/``.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from benchmarks import common
from benchmarks.multi30k_decode import command_line, decode, target_language
from node_seq.ode import FIXED_GRID_METHODS, observe_evaluations

BASELINE = "sequence"
#: The solvers compared, by name: the checkpoint's overrides (``--fixed`` adds the fixed grid's).
CONTROLS = {"batch": {"node_step_control": "batch"},
            BASELINE: {"node_step_control": "sequence", "node_compact_rows": False},
            "sequence, compacted": {"node_step_control": "sequence", "node_compact_rows": True}}
DEFAULT_BATCH_SIZES, QUICK_BATCH_SIZES = "1,8,32,128", "1,4"
_TRANSLATED = re.compile(r"Translated ([\d,]+) sentences .* \(([\d.]+) sentences/s")


def parse_fixed(text: str) -> dict:
    """``METHOD:STEPS`` of ``--fixed``, as the checkpoint's overrides."""
    method, _, steps = text.partition(":")
    if method not in FIXED_GRID_METHODS or not steps.isdigit() or int(steps) < 1:
        raise SystemExit(f"--fixed: {text!r} must be METHOD:STEPS with METHOD one of {', '.join(FIXED_GRID_METHODS)} "
                         "and STEPS >= 1")
    return {"node_method": method, "node_steps": int(steps), "node_step_size": None}


def parse_batch_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip().isdigit()]
    if not sizes or len(sizes) != len(text.split(",")) or min(sizes) < 1:
        raise SystemExit(f"--batch-sizes: {text!r} must be comma-separated whole numbers >= 1, e.g. {DEFAULT_BATCH_SIZES}")
    return sizes


def words_per_second(log: Path, hypotheses: dict[int, str]) -> float:
    """Hypothesis words over the generation time of fairseq's summary line (model loading left out)."""
    found = _TRANSLATED.findall(log.read_text(encoding="utf-8"))
    if not found:
        raise ValueError(f"{log}: no 'Translated N sentences' line; did fairseq-generate finish?")
    sentences, per_second = found[-1]
    seconds = int(sentences.replace(",", "")) / float(per_second)
    return sum(len(h.split()) for h in hypotheses.values()) / seconds


def decode_counted(data_dir: Path, checkpoint: Path, log: Path, extra: list[str], overrides: dict) -> dict:
    """One decoding, scored, with its words/s and the rows every ODE block evaluated per sentence."""
    from node_seq.text.score import read_hypotheses

    rows = 0

    def count(func, t, y, *inputs):
        nonlocal rows
        rows += y.shape[0]
        return func(t, y, *inputs)

    with observe_evaluations(count):
        scored = decode(data_dir, checkpoint, log, extra, overrides=overrides)
    hypotheses = read_hypotheses(log)
    return {**scored, "words_per_s": words_per_second(log, hypotheses), "row_evaluations_per_sentence":
            rows / scored["sentences"], "hypotheses": hypotheses}


def main(argv: list[str] | None = None) -> list[dict]:
    parser, own, extra = command_line(__doc__.splitlines()[0], argv)
    parser.add_argument("--model", required=True, type=Path, help="fairseq checkpoint with adaptive ODE blocks")
    parser.add_argument("--batch-sizes", default=None, help=f"comma-separated (default {DEFAULT_BATCH_SIZES}; "
                                                             f"--quick {QUICK_BATCH_SIZES})")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; --quick 1)")
    parser.add_argument("--fixed", default="rk4:2", help="the fixed grid of the same weights, METHOD:STEPS")
    parser.add_argument("--rtol", type=float, default=None, help="the adaptive solvers' tolerance (atol rtol/10; "
                        "default: the checkpoint's)")
    parser.add_argument("--quick", action="store_true", help="two small batch sizes, one round")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/row_compaction.json"))
    args = parser.parse_args(own)
    sizes = parse_batch_sizes(args.batch_sizes or (QUICK_BATCH_SIZES if args.quick else DEFAULT_BATCH_SIZES))
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        raise SystemExit(f"--rounds: must be >= 1, got {rounds}")
    if not args.model.is_file():
        raise SystemExit(f"--model: {args.model} is not a checkpoint file")
    if args.rtol is not None and not args.rtol > 0:
        raise SystemExit(f"--rtol: must be a tolerance > 0, got {args.rtol}")
    tolerance = {} if args.rtol is None else {"node_rtol": args.rtol, "node_atol": args.rtol / 10}
    solvers = {**{name: {**control, **tolerance} for name, control in CONTROLS.items()},
               f"fixed {args.fixed}": parse_fixed(args.fixed)}
    target_language(args.data_dir)  # every check before any decoding
    (args.out_dir / "logs").mkdir(parents=True, exist_ok=True)

    runs: dict[tuple[int, str], list[dict]] = {}
    names = list(solvers)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for size in sizes:
            for name in order:
                log = args.out_dir / "logs" / f"{name.replace(' ', '-').replace(',', '').replace(':', '-')}.b{size}.log"
                run = decode_counted(args.data_dir, args.model, log, [*extra, "--batch-size", str(size)], solvers[name])
                runs.setdefault((size, name), []).append(run)
                print(f"round {r + 1}/{rounds}, batch {size}, {name}: {run['words_per_s']:.1f} words/s, "
                      f"BLEU {run['bleu']:.2f}", flush=True)

    rows = []
    for size in sizes:
        per_row = runs[size, BASELINE]
        for name in names:
            own_runs, first = runs[size, name], runs[size, name][0]
            rows.append({
                "batch_size": size, "solver": name, **solvers[name],
                "words_per_s": statistics.median(run["words_per_s"] for run in own_runs),
                "ratio_to_sequence": statistics.median(run["words_per_s"] / base["words_per_s"]
                                                       for run, base in zip(own_runs, per_row)),
                "words_per_s_rounds": [round(run["words_per_s"], 2) for run in own_runs],
                "nfe_per_sentence": first["nfe_per_sentence"],
                "row_evaluations_per_sentence": round(first["row_evaluations_per_sentence"], 2),
                "bleu": first["bleu"], "chrf": first["chrf"],
                "translations_differing_from_sequence": sum(
                    first["hypotheses"][i] != per_row[0]["hypotheses"][i] for i in first["hypotheses"]),
            })
    result = {"command": common.command_line("benchmarks.row_compaction", argv),
              "meta": {"machine": common.machine(), "rounds": rounds, "checkpoint": str(args.model), "rtol": args.rtol,
                       "note": "CPU cores may have been shared with other jobs while this was measured: read the "
                               "per-round ratios, not absolute words/s"},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
