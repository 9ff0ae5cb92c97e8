"""The results pages of the documentation site, generated from ``benchmarks/results/*.json``.

    python -m benchmarks.pages --out docs/results

Every result file has this one generator: a page per topic with each file's table, its command,
machine and date, its plot where a PNG lies beside it, and a findings paragraph whose numbers are
read from the JSON here, never typed. Nothing it writes is committed (the site builds it), so a stale
page beside a newer result cannot exist. ``archive.md`` (the dated history) is the one page kept by
hand, and it is copied from ``docs/results/archive.md`` untouched.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"
ARCHIVE = Path(__file__).resolve().parent.parent / "docs" / "results" / "archive.md"
SHARED_CORES = ("The CPU figures were measured on 2 cores shared with other engineers' jobs: read ratios, "
                "not absolute times, and differences of a few percent as noise.")


@dataclass(frozen=True)
class Result:
    """One result file on a page; ``command`` is for files that do not record their own, ``plots`` for
    plots kept elsewhere than ``<name>.png`` (paths below the results folder)."""

    name: str
    command: str | None = None
    columns: tuple[str, ...] | None = None
    plots: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    results: tuple[Result, ...]
    findings: Callable[[dict[str, Any]], str]
    note: str = field(default="")


def _load(results: Path, name: str) -> Any:
    return json.loads((results / f"{name}.json").read_text(encoding="utf-8"))


def rows_of(data: Any) -> list[dict]:
    """The records of a result file, whichever of the three shapes it was written in."""
    if isinstance(data, list):
        return data
    if "rows" in data:
        return data["rows"]
    return [{"series": name, **row} for name, rows in data.items() for row in rows]  # {series: [rows]}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "/")


def table(rows: list[dict], columns: tuple[str, ...] | None = None) -> str:
    """A Markdown table of the records; without ``columns``, every key holding a scalar or a flat list."""
    if columns is None:
        columns = tuple(dict.fromkeys(key for row in rows for key, value in row.items()
                                      if not isinstance(value, dict)
                                      and not (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def provenance(data: Any, result: Result) -> str:
    """Command, machine and date: from the file, or the topic's command where the file has none."""
    command = data.get("command") if isinstance(data, dict) else None
    command = command or result.command or "not recorded"
    meta = data.get("meta", {}) if isinstance(data, dict) else {}
    m = meta.get("machine")
    if m:
        threads = f", {m['threads']} torch thread(s)" if "threads" in m else ""
        machine = (f"{m['cpu']} ({m['cpu_count']} cores{threads}{', ' + m['gpu'] if 'gpu' in m else ''}), "
                   f"device {meta.get('device', 'cpu')}, torch {m['torch']}")
        date = m["date"]
    else:
        dates = sorted({r["date"] for r in rows_of(data) if isinstance(r, dict) and "date" in r})
        machine = meta.get("source") or "not recorded in the file (2 shared CPU cores, see the archive)"
        date = " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else "not recorded in the file"
    return f"Command: `{command}`  \nMachine: {machine}  \nDate: {date}"


# -- findings: each reads its numbers from the loaded result files ---------------------------------------

def _by(rows: list[dict], **match: Any) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _solver_overhead(d: dict) -> str:
    rows = d["solver_overhead"]["rows"]
    worst = max(rows, key=lambda r: r["solve_vs_loop"])
    return (f"`solve` against a hand-written loop of the same steps: the median ratio is at most "
            f"{worst['solve_vs_loop']:.3f} ({worst['method']}, {worst['pass']}, {worst['field']}) over "
            f"{len(rows)} cells, against a bar of {d['solver_overhead']['meta']['bar']}.")


def _memory(d: dict) -> str:
    summary = {s["gradient"]: s["growth"] for s in d["memory"]["meta"]["summary"]}
    steps = sorted({r["steps"] for r in d["memory"]["rows"]})
    others = ", ".join(f"`{g}` {v:.2f}x" for g, v in summary.items() if g != "backprop")
    return (f"From {steps[0]} to {steps[-1]} Euler steps the peak memory of `backprop` grows "
            f"{summary['backprop']:.1f}x; {others}. Plain `checkpoint` stores one state per step, so it "
            f"grows too; with snapshots (binomial schedule) it stays flat.")


def _compile(d: dict) -> str:
    rows = d["compile"]["rows"]
    cells = ", ".join(f"{r['cell']} {r['variant']} {r['compiled_speedup']:.2f}x" for r in rows
                      if r["variant"].endswith("eager"))
    return f"Speed-up of `torch.compile` over eager (eager time / compiled time, median over rounds): {cells}."


def _decoding(d: dict) -> str:
    rows = d["decoding"]["rows"]
    cached = [r for r in rows if "per-stage cache" in r["variant"]]
    text = ", ".join(f"{r['ratio_to_transformer']:.2f}x (length {r['length']})" for r in cached)
    return (f"With the per-stage cache, the NODE model decodes sentences at {text} the speed of the fairseq "
            f"Transformer; without it (prefix recompute) at "
            f"{min(r['ratio_to_transformer'] for r in rows if 'no cache' in r['variant']):.2f}x at best.")


def _training(d: dict) -> str:
    rows = [r for r in d["fairseq_train_throughput"]["rows"] if r["part"] == "throughput"]
    text = "; ".join(f"{r['variant']} {r['ratio']:.2f}x" for r in rows[1:])
    return f"Training words/s against the fairseq Transformer (median ratio over rounds): {text}."


def _adaptive(d: dict) -> str:
    rows = d["adaptive_path"]["rows"]
    before, best = rows[1], min(rows[1:], key=lambda r: r["time_ratio_to_plain"])
    return (f"An adaptive (dopri5) update cost {before['time_ratio_to_plain']:.1f}x a plain one before "
            f"(`{before['variant']}`) and {best['time_ratio_to_plain']:.1f}x after (`{best['variant']}`).")


def _import_time(d: dict) -> str:
    rows = d["import_time"]["rows"]
    parts = [f"`{r['module']}` {_by(rows, tree='before', module=r['module'])['median_seconds']:.1f} s -> "
             f"{r['median_seconds']:.1f} s" for r in rows if r["tree"] == "after" and r["module"] != "torch"]
    return "Median import time before -> after the one-way imports: " + "; ".join(parts) + "."


def _seed_spread(records: list[dict], variant: str) -> tuple[list[float], float, float]:
    scores = [r["bleu"] for r in sorted(records, key=lambda r: r["seed"]) if r["variant"] == variant]
    return scores, mean(scores), stdev(scores) if len(scores) > 1 else 0.0


def _quality(d: dict) -> str:
    best, base = "node-encoder-rk2-gated", "baseline"
    external = d["multi30k_quality_external"]["rows"]
    seed_runs = [r for r in external if "bleu" in r]
    other_sets = [r for r in external if "delta_bleu" in r]
    here = d["multi30k_quality"]
    everything = here + seed_runs
    b3, b3m, _ = _seed_spread(here, base)
    g3, g3m, _ = _seed_spread(here, best)
    b, bm, bsd = _seed_spread(everything, base)
    g, gm, gsd = _seed_spread(everything, best)
    seed4 = _by(seed_runs, variant=best)
    others = "; ".join(f"{s['test_set']}: {s['delta_bleu']:+.2f} BLEU (p = {s['p_bleu']})"
                       + (f", chrF2 {s['delta_chrf']:+.2f} (p = {s['p_chrf']})" if "delta_chrf" in s else "")
                       for s in other_sets)
    return (f"Over the {len(b3)} seeds kept here, rk2-gated leads the baseline by {g3m - b3m:+.2f} sacreBLEU on "
            f"average. An independent run with an unused seed ({seed4['seed']}, same recipe and code) gives the "
            f"baseline {_by(seed_runs, variant=base)['bleu']:.2f} and rk2-gated {seed4['bleu']:.2f} "
            f"(p = {seed4['p_vs_baseline']}). Over {len(b)} seeds the baseline scores {bm:.2f} ± {bsd:.2f} and "
            f"rk2-gated {gm:.2f} ± {gsd:.2f} (mean ± sd): a mean gain of {gm - bm:+.2f} BLEU, "
            f"{'smaller' if gm - bm < bsd else 'larger'} than the baseline's seed-to-seed spread. "
            f"On two test sets never used for choices: {others}. What holds is a "
            f"small gain that the spread over seeds can hide, not a per-seed win.")


def _elastic(d: dict) -> str:
    rows = d["elastic_depth_multi30k"]
    trained = [r for r in rows if r["setting"] == "trained"]
    parts = []
    for t in trained:
        mine = [r for r in rows if r["model"] == t["model"] and r["setting"] != "trained"
                and isinstance(r.get("bleu"), (int, float))]
        low = min(mine, key=lambda r: r["nfe_per_sentence"])
        parts.append(f"{t['model']} {t['bleu']:.2f} as trained -> {low['bleu']:.2f} at "
                     f"{low['nfe_per_sentence']:.1f} NFE/sentence ({low['setting']})")
    return "BLEU as trained and with the cheapest solver tried: " + "; ".join(parts) + "."


def _length_penalty(d: dict) -> str:
    rows = d["multi30k_length_penalty"]
    chosen = {r["model"]: r.get("lenpen") for r in rows}
    return ("The length penalty tuned on the validation set, per model: "
            + ", ".join(f"{m} {v:g}" for m, v in chosen.items()) + ".")


def _lms(d: dict) -> str:
    rows = d["multi30k_lm"]["rows"]
    plain = _by(rows, variant="plain")
    speed = plain["train_tokens_per_second"]
    text = "; ".join(f"{r['variant']} {r['valid_perplexity']:.2f} ({r['train_tokens_per_second'] / speed:.2f}x "
                     f"the plain model's training tokens/s)" for r in rows[1:])
    return (f"Validation perplexity after {plain['updates']} updates: plain {plain['valid_perplexity']:.2f}; "
            f"{text}.")


def _kinetic(d: dict) -> str:
    rows = d["kinetic"]["rows"]
    return "Per kinetic weight: " + "; ".join(f"{r['variant']}: BLEU {r['bleu']}, training NFE {r['train_nfe_f']}, "
                                              f"decoding NFE {r['decode_nfe']}" for r in rows) + "."


def _hf_checkpointing(d: dict) -> str:
    rows = d["hf_gradient_checkpointing"]["rows"]
    parts = [f"{r['model']} {r['method']} `{r['variant']}` {r['peak_vs_off']:.2f}x the memory at "
             f"{r['time_vs_off']:.2f}x the time" for r in rows if r["variant"] != "off"]
    largest = max(r["max_grad_diff_vs_off"] for r in rows)
    return "Against no checkpointing: " + "; ".join(parts) + f". Largest gradient difference: {largest:.3g}."


def _mixed_precision(d: dict) -> str:
    rows = d["mixed_precision"]["rows"]
    parts = [f"{r['method']} {r['precision']}: {r['time_vs_float32']:.2f}x the time, {r['peak_vs_float32']:.2f}x the "
             f"memory, final loss {r['final_loss']:.3f}" for r in rows]
    return "Against float32 on the CPU: " + "; ".join(parts) + "."


def _fsdp(d: dict) -> str:
    rows = d["fsdp_parity_cpu"]["rows"]
    largest = max(r["max_loss_rel_difference"] for r in rows)
    return (f"FSDP2 and DDP over {max(r['processes'] for r in rows)} processes follow the one-process losses to a "
            f"relative difference of {largest:.2g}, with the same NFE: "
            f"{'yes' if all(r['same_nfe'] for r in rows) else 'no'}. The CPU run checks parity, not speed.")


TOPICS: tuple[Topic, ...] = (
    Topic("solver-overhead", "Fixed-grid solver overhead",
          (Result("solver_overhead"), Result("solver_overhead_quick")), _solver_overhead),
    Topic("memory", "Peak memory per gradient mode", (Result("memory"),), _memory),
    Topic("compile", "Eager against torch.compile", (Result("compile"),), _compile),
    Topic("decoding", "Decoding speed", (Result("decoding"),), _decoding),
    Topic("training", "Training throughput in fairseq",
          (Result("fairseq_train_throughput"), Result("fairseq_train")), _training),
    Topic("adaptive-path", "Adaptive solver path", (Result("adaptive_path"), Result("adaptive_path_profiled")),
          _adaptive),
    Topic("import-time", "Import time", (Result("import_time"),), _import_time),
    Topic("multi30k-quality", "Quality on Multi30k De-En over seeds",
          (Result("multi30k_quality", "bash benchmarks/multi30k_quality.sh, then python -m benchmarks.quality_records",
                  ("variant", "seed", "bleu", "chrf", "p_vs_baseline", "p_chrf_vs_baseline", "params", "epochs",
                   "train_wps", "nfe_train", "nfe_decode", "date")),
           Result("multi30k_quality_external", "issue #28: an independent run (hypotheses not kept here)"),
           Result("multi30k_quality_whitespace_bpe", "bash benchmarks/multi30k_quality.sh (first, whitespace-only BPE)",
                  ("variant", "seed", "bleu", "chrf", "p_vs_baseline", "params", "epochs", "train_wps")),
           Result("gate_statistics_multi30k", "python -m benchmarks.gate_statistics"),
           Result("gate_statistics_multi30k_seed2", "python -m benchmarks.gate_statistics"),
           Result("gate_statistics_multi30k_whitespace_bpe", "python -m benchmarks.gate_statistics")),
          _quality),
    Topic("elastic-depth", "Elastic depth: decoding with other solvers than trained with",
          (Result("elastic_depth_multi30k", "python -m benchmarks.elastic_depth"),
           Result("elastic_depth_multi30k_whitespace_bpe", "python -m benchmarks.elastic_depth"),
           Result("elastic_depth_demo", "python -m benchmarks.elastic_depth")), _elastic),
    Topic("length-penalty", "Length penalty", (Result("multi30k_length_penalty", "python -m benchmarks.length_penalty"),),
          _length_penalty),
    Topic("language-models", "Language models on Multi30k's English side",
          (Result("multi30k_lm"), Result("multi30k_lm_speed"),
           Result("multi30k_lm_elastic", "python -m benchmarks.multi30k_lm (its sweep)",
                  plots=tuple(f"multi30k_lm_elastic/{v}/elastic.png" for v in ("midpoint", "euler-kinetic", "dopri5")))),
          _lms),
    Topic("kinetic", "Kinetic-energy regularisation", (Result("kinetic"),), _kinetic),
    Topic("hf-gradient-checkpointing", "HF gradient checkpointing", (Result("hf_gradient_checkpointing"),),
          _hf_checkpointing),
    Topic("mixed-precision", "Mixed precision", (Result("mixed_precision"),), _mixed_precision),
    Topic("fsdp-parity", "FSDP parity (CPU)", (Result("fsdp_parity_cpu"),), _fsdp),
)


def render(topic: Topic, results: Path) -> tuple[str, list[tuple[Path, str]]]:
    """One topic's page and the plots it shows (each with the file name it has beside the page)."""
    data = {r.name: _load(results, r.name) for r in topic.results}
    parts = [f"# {topic.title}", "", "## Findings", "", topic.findings(data), "", SHARED_CORES, ""]
    plots = []
    for r in topic.results:
        parts += [f"## `{r.name}.json`", "", provenance(data[r.name], r), "", table(rows_of(data[r.name]), r.columns), ""]
        for png in [results / f"{r.name}.png", *(results / p for p in r.plots)]:
            if png.is_file():
                shown = png.relative_to(results).as_posix().replace("/", "-")
                plots.append((png, shown))
                parts += [f"![{shown}]({shown})", ""]
    return "\n".join(parts), plots


def write_results_pages(out_dir: str | Path, results: str | Path = RESULTS) -> list[Path]:
    """Write ``index.md``, one page per topic, their plots and the archive into ``out_dir``; return the pages."""
    out, results = Path(out_dir), Path(results)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in TOPICS:
        page, plots = render(topic, results)
        (out / f"{topic.slug}.md").write_text(page, encoding="utf-8")
        written.append(out / f"{topic.slug}.md")
        for png, shown in plots:
            shutil.copyfile(png, out / shown)
    index = ["# Results", "", "Every page below is generated from `benchmarks/results/*.json` by "
             "`python -m benchmarks.pages`; the dated history is in the [archive](archive.md).", ""]
    index += [f"- [{t.title}]({t.slug}.md)" for t in TOPICS]
    (out / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    if ARCHIVE.resolve() != (out / "archive.md").resolve():
        shutil.copyfile(ARCHIVE, out / "archive.md")
    return [out / "index.md", *written, out / "archive.md"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pages", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results", help="folder the pages are written to")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the result files")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        raise SystemExit(f"--results: {args.results} is not a folder")
    for page in write_results_pages(args.out, args.results):
        print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
