"""One finished Multi30k run as a record of ``benchmarks/results/multi30k_quality.json``.

    python -m benchmarks.quality_records RUN_DIR --variant NAME --method METHOD --sides encoder \\
        --references runs/multi30k/raw/test.en [--baseline BASELINE_RUN_DIR] [--train-log LOG] [--note TEXT]

RUN_DIR holds what ``scripts/train_multi30k.sh`` and ``scripts/evaluate_multi30k.sh`` wrote
(``generate-test.log``; the training log is ``RUN_DIR/train.log`` unless ``--train-log`` says
otherwise). The record has sacreBLEU and chrF2 on the test set, the p-values of sacreBLEU's paired
bootstrap (1000 resamples) of both against the baseline run's hypotheses (``p_vs_baseline``: BLEU,
``p_chrf_vs_baseline``: chrF2), the parameter count, epochs and
seed from the log, the training words/s of the fastest epoch (the machine is often shared, so the
fastest epoch is the least disturbed), the forward NFE per update of the last epoch, and the
decoding NFE per sentence. A record with the same variant and seed is replaced.

The run's detokenized test hypotheses are kept beside the records file (``multi30k_quality.json`` ->
``multi30k_quality_hypotheses/<variant>-seed<seed>.txt``), so a p-value can be recomputed, or a new run
tested against an old one, after the run folders are gone: ``--baseline`` takes such a file as well
as a run directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

from benchmarks.quality_report import _PARAMS, _field
from node_seq.text.generate_log import read_nfe
from node_seq.text.score import read_hypotheses, score

RESULTS = Path(__file__).resolve().parent / "results" / "multi30k_quality.json"
SIDES = ("none", "encoder", "decoder", "both")
_SEED = re.compile(r"'seed': (\d+)")
_TRAIN = re.compile(r"\| train \| epoch (\d+) \|.*")


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str]) -> dict[str, float]:
    """sacreBLEU's paired bootstrap p-values of the BLEU and chrF2 differences (1000 resamples, its
    fixed seed), keyed ``bleu`` and ``chrf``."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    test = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU(), "chrF2": CHRF()},
                      references=[references], test_type="bs", n_samples=1000)
    _signatures, scores = test()  # keyed by each metric's own name
    return {"bleu": round(float(scores["BLEU"][1].p_value), 4), "chrf": round(float(scores["chrF2"][1].p_value), 4)}


def in_order(generate_log: Path) -> list[str]:
    hypotheses = read_hypotheses(generate_log)
    return [hypotheses[i] for i in sorted(hypotheses)]


def baseline_source(baseline: Path) -> Path:
    """The file the baseline's hypotheses come from: its run's generate log, or a kept hypotheses file."""
    return baseline / "generate-test.log" if baseline.is_dir() else baseline


def baseline_hypotheses(baseline: Path) -> list[str]:
    source = baseline_source(baseline)
    return in_order(source) if source != baseline else source.read_text(encoding="utf-8").splitlines()


def hypotheses_file(results: Path, variant: str, seed: int | None) -> Path:
    """Where the hypotheses of ``variant`` at ``seed`` are kept, beside the records file."""
    return results.with_name(f"{results.stem}_hypotheses") / f"{variant}-seed{seed}.txt"


def record(run_dir: Path, *, variant: str, method: str | None, sides: str, references: Path,
           baseline: Path | None = None, train_log: Path | None = None) -> dict:
    log = (train_log or run_dir / "train.log").read_text(encoding="utf-8")
    epochs = [m.group(0) for m in _TRAIN.finditer(log)]
    if not epochs:
        raise SystemExit(f"--train-log: no '| train | epoch' line in {train_log or run_dir / 'train.log'}")
    generate_log = run_dir / "generate-test.log"
    hypotheses = read_hypotheses(generate_log)
    result = score(generate_log, references, hypotheses)
    p_values = {"bleu": None, "chrf": None}
    if baseline is not None:
        refs = [line.strip() for line in references.read_text(encoding="utf-8").splitlines()]
        baseline_lines = baseline_hypotheses(baseline)
        if len(baseline_lines) != len(refs):
            raise SystemExit(f"--baseline: {len(baseline_lines)} hypotheses in {baseline}, {len(refs)} references")
        p_values = paired_bootstrap(baseline_lines, [hypotheses[i] for i in sorted(hypotheses)], refs)
    nfe_train = _field(epochs[-1], "nfe_f")
    params, seed = _PARAMS.search(log), _SEED.search(log)
    return {
        "variant": variant, "method": method, "sides": sides,
        "params": int(params.group(1).replace(",", "")) if params else None,
        "epochs": int(_TRAIN.search(epochs[-1]).group(1)), "seed": int(seed.group(1)) if seed else None,
        "bleu": result["bleu"], "chrf": result["chrf"], "p_vs_baseline": p_values["bleu"],
        "p_chrf_vs_baseline": p_values["chrf"],
        "length_ratio": result["length_ratio"], "precisions": result["precisions"],
        "train_wps": max(float(_field(line, "wps")) for line in epochs),
        "nfe_train": float(nfe_train) if nfe_train != "-" else 0,
        "nfe_decode": read_nfe(generate_log.read_text(encoding="utf-8")) or 0,
        "date": datetime.date.today().isoformat(),
    }


def upsert(results: Path, new: dict) -> list[dict]:
    """Add ``new`` to the results file, replacing the record of the same variant and seed."""
    records = json.loads(results.read_text(encoding="utf-8")) if results.exists() else []
    records = [r for r in records if (r["variant"], r["seed"]) != (new["variant"], new["seed"])] + [new]
    results.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return records


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--method", default=None, help="the ODE method (none for the baseline)")
    parser.add_argument("--sides", choices=SIDES, required=True, help="which side has ODE layers")
    parser.add_argument("--references", type=Path, required=True, help="raw test references, e.g. raw/test.en")
    parser.add_argument("--baseline", type=Path, help="the baseline's run directory, or its kept hypotheses file "
                        "(for the paired bootstrap)")
    parser.add_argument("--train-log", type=Path)
    parser.add_argument("--note", help="anything a reader needs to know about this run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for flag, path in (("RUN_DIR", args.run_dir / "generate-test.log"), ("--references", args.references),
                       ("--baseline", args.baseline and baseline_source(args.baseline))):
        if path is not None and not path.is_file():
            raise SystemExit(f"{flag}: {path} not found")
    new = record(args.run_dir, variant=args.variant, method=args.method, sides=args.sides,
                 references=args.references, baseline=args.baseline, train_log=args.train_log)
    if args.note:
        new["note"] = args.note
    upsert(args.results, new)
    kept = hypotheses_file(args.results, new["variant"], new["seed"])
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text("\n".join(in_order(args.run_dir / "generate-test.log")) + "\n", encoding="utf-8")
    print(json.dumps(new))
    return new


if __name__ == "__main__":
    main()
