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
import math
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
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
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
    """Command, machine and date: from the file, or the topic's command where the file has none; a record
    taken from elsewhere (``source``) says where from instead."""
    if isinstance(data, dict) and "source" in data:
        return f"Source: {data['source']}  \nMachine and date: as given by the source, not measured here"
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
        machine = "not recorded in the file (2 shared CPU cores, see the archive)"
        date = " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else "not recorded in the file"
    return f"Command: `{command}`  \nMachine: {machine}  \nDate: {date}"


# -- findings: each reads its numbers from the loaded result files ---------------------------------------

def _by(rows: list[dict], **match: Any) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _solver_overhead(d: dict) -> str:
    meta, rows = d["solver_overhead"]["meta"], d["solver_overhead"]["rows"]
    within = [r for r in rows if r["solve_vs_loop"] <= meta["bar"]]
    worst = max(rows, key=lambda r: r["solve_vs_loop"])
    vs_torchdiffeq = sorted(r["solve_vs_torchdiffeq"] for r in rows)
    return (f"`node_seq.ode.solve`, a hand-written loop and `torchdiffeq.odeint` make the same vector-field calls on "
            f"the same grid. `solve` stays within {meta['bar']}x the loop in {len(within)} of {len(rows)} cells; the "
            f"largest median ratio is {worst['solve_vs_loop']:.3f} ({worst['method']}, {worst['pass']}), whose rounds "
            f"ranged {worst['solve_vs_loop_range'][0]:.2f}-{worst['solve_vs_loop_range'][1]:.2f}. Against torchdiffeq "
            f"`solve` reads {vs_torchdiffeq[0]:.2f}-{vs_torchdiffeq[-1]:.2f}x. What it means: where one field "
            f"evaluation is a Transformer layer, the solver's own Python costs less than this machine can resolve; "
            f"the `_quick` file repeats the comparison at sizes where the loop itself is the cost.")


def _memory(d: dict) -> str:
    meta = d["memory"]["meta"]
    summary = {s["gradient"]: s["growth"] for s in meta["summary"]}
    steps = sorted({r["steps"] for r in d["memory"]["rows"]})
    others = ", ".join(f"`{g}` {v:.2f}x" for g, v in summary.items() if g != "backprop")
    flat = ", ".join(f"`{s['gradient']}`" for s in meta["summary"] if s["meets_bar"] == "yes")
    return (f"Peak memory of one forward + backward solve of a Transformer-layer field ({meta['measure']}; state "
            f"{meta['state_mib']:.2f} MiB). From {steps[0]} to {steps[-1]} {meta['method']} steps `backprop` grows "
            f"{summary['backprop']:.1f}x; {others}. What it means: {flat} keep memory flat in the number of steps "
            f"(within 1.25x of their own {steps[0]}-step peak); plain `checkpoint` keeps one state per step, and "
            f"`checkpoint:S` (a fixed number of snapshots, binomial schedule) is the one to use when memory is short.")


def _compile(d: dict) -> str:
    rows = d["compile"]["rows"]
    speedups = ", ".join(f"{r['cell']} {r['variant'].split()[0]} {r['compiled_speedup']:.2f}x" for r in rows
                         if r["variant"].endswith("eager"))
    node = ", ".join(f"{r['cell']} {r['ratio_to_plain_compiled']:.2f}x" for r in rows if r["variant"] == "NODE compiled")
    return (f"A training step and a cached decoding step, each model eager and under `torch.compile` with the same "
            f"number of layer evaluations. Compiled NODE against compiled plain (time ratio): {node}. Compiled "
            f"over eager (speed-up): {speedups}. What it means: the ODE layers compile as well as plain ones "
            f"(`fullgraph=True`); on this CPU compiling does not always pay, a speed-up below 1 is a slower "
            f"compiled step.")


def _decoding(d: dict) -> str:
    rows = d["decoding"]["rows"]
    cached = [r for r in rows if "per-stage cache" in r["variant"]]
    text = ", ".join(f"{r['ratio_to_transformer']:.2f}x (length {r['length']})" for r in cached)
    return (f"With the per-stage cache, the NODE model decodes sentences at {text} the speed of the fairseq "
            f"Transformer; without it (prefix recompute) at "
            f"{min(r['ratio_to_transformer'] for r in rows if 'no cache' in r['variant']):.2f}x at best.")


def _training(d: dict) -> str:
    rows = [r for r in d["fairseq_train_throughput"]["rows"] if r["part"] == "throughput"]
    text = "; ".join(f"{r['variant']} {r['ratio']:.2f}x (NFE forward/backward {r['nfe_f_b']})" for r in rows[1:])
    seminorm = _by(d["fairseq_train"]["rows"], part="seminorm")
    return (f"fairseq training words/s against the fairseq Transformer with the same number of layer evaluations "
            f"(median ratio over interleaved rounds): {text}. What it means: at equal evaluations the node_transformer "
            f"models train at {min(r['ratio'] for r in rows[1:]):.2f}-{max(r['ratio'] for r in rows[1:]):.2f}x the "
            f"Transformer's speed. With adaptive dopri5 and the adjoint, the seminorm cuts the backward evaluations "
            f"from {seminorm['nfe_b_adjoint']:g} to {seminorm['nfe_b_seminorm']:g} per update "
            f"({seminorm['saved']:.0%} fewer; `fairseq_train.json`).")


def _adaptive(d: dict) -> str:
    rows = d["adaptive_path"]["rows"]
    before, best = rows[1], min(rows[1:], key=lambda r: r["time_ratio_to_plain"])
    return (f"One fairseq training update with adaptive ODE layers, timed against the same update with plain "
            f"layers, on {d['adaptive_path']['meta']['rounds']} round(s) of one batch. It cost "
            f"{before['time_ratio_to_plain']:.1f}x a plain update before (`{before['variant']}`, "
            f"{before['nfe_f_per_update']} evaluations per update) and {best['time_ratio_to_plain']:.1f}x after "
            f"(`{best['variant']}`, {best['nfe_f_per_update']}). What it means: the first step decides most of the "
            f"cost; one round on a shared machine, so read the ratio's size, not its digits.")


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
    hidden = gm - bm < bsd
    over_seeds = table([{"variant": v, "seeds": [r["seed"] for r in runs], "sacreBLEU per seed": [r["bleu"] for r in runs],
                         "sacreBLEU mean ± sd": f"{mean(x['bleu'] for x in runs):.2f} ± "
                                                f"{stdev(x['bleu'] for x in runs):.2f}" if len(runs) > 1 else "one seed"}
                        for v in dict.fromkeys(r["variant"] for r in everything)
                        for runs in [sorted((r for r in everything if r["variant"] == v), key=lambda r: r["seed"])]])
    return (f"Over the {len(b3)} seeds kept here, rk2-gated leads the baseline by {g3m - b3m:+.2f} sacreBLEU on "
            f"average. An independent run with an unused seed ({seed4['seed']}, same recipe and code) gives the "
            f"baseline {_by(seed_runs, variant=base)['bleu']:.2f} and rk2-gated {seed4['bleu']:.2f} "
            f"(p = {seed4['p_vs_baseline']}). Over {len(b)} seeds the baseline scores {bm:.2f} ± {bsd:.2f} and "
            f"rk2-gated {gm:.2f} ± {gsd:.2f} (mean ± sd): a mean gain of {gm - bm:+.2f} BLEU, "
            f"{'smaller' if hidden else 'larger'} than the baseline's seed-to-seed spread. "
            f"On {len(other_sets)} test sets never used for choices: {others}. What holds: "
            + ("a small gain that the spread over seeds can hide, not a per-seed win." if hidden else
               "a gain larger than the spread over seeds.")
            + "\n\nEvery variant over its seeds (test_2016_flickr, the independent run's seed included):\n\n"
            + over_seeds)


def _elastic(d: dict) -> str:
    rows = d["elastic_depth_multi30k"]
    parts, losses = [], {}
    for t in (r for r in rows if r["setting"] == "trained"):
        cheaper = [r for r in rows if r["model"] == t["model"] and isinstance(r.get("bleu"), (int, float))
                   and r["nfe_per_sentence"] < t["nfe_per_sentence"]]
        if not cheaper:
            continue
        low = min(cheaper, key=lambda r: (r["nfe_per_sentence"], -r["bleu"]))
        losses[t["model"]] = t["bleu"] - low["bleu"]
        parts.append(f"{t['model']} {t['bleu']:.2f} at {t['nfe_per_sentence']:g} NFE/sentence as trained -> "
                     f"{low['bleu']:.2f} at {low['nfe_per_sentence']:g} ({low['setting']})")
    worst = max(losses, key=losses.get)
    return (f"Multi30k encoders trained with one solver, decoded with others (one seed each). As trained and with the "
            f"cheapest solver tried: {'; '.join(parts)}. What it means: decoding with fewer evaluations than the "
            f"model was trained with costs at most {losses[worst]:.2f} BLEU here ({worst}); the plots show every "
            f"solver tried.")


def _adaptive_sentences(d: dict) -> str:
    data = d["adaptive_sentences"]
    rows, model = data["rows"], data["meta"]["model"]
    trained = min(rows, key=lambda r: abs(math.log(r["rtol"] / model["trained_rtol"])))
    loose, tight = max(rows, key=lambda r: r["rtol"]), min(rows, key=lambda r: r["rtol"])
    varied = [r for r in rows if r["spearman_nfe_length"] is not None]
    correlation = "; ".join(f"rtol {r['rtol']:g}: {r['spearman_nfe_length']:+.2f} with length, "
                            f"{r['spearman_nfe_loss']:+.2f} with loss" for r in varied) or "none defined"
    same = sum(r["sequence_differs_from_alone"] == 0 for r in rows)
    tuned = d["adaptive_vs_euler"][-1]
    quality = (f"Its test scores: sacreBLEU {tuned['bleu']:.2f}, chrF2 {tuned['chrf']:.2f}; against the Euler model "
               f"trained all 10 epochs (same recipe and seed) sacreBLEU's paired bootstrap gives p = "
               f"{tuned['p_vs_baseline']} (BLEU) and {tuned['p_chrf_vs_baseline']} (chrF2).")
    return (f"The model: {model['note']}. {quality} Per-sentence step control, in fairseq-generate's batches of "
            f"{model['max_tokens']} tokens. At the trained tolerance (rtol {trained['rtol']:g}) a sentence takes "
            f"{trained['nfe_mean']:g} NFE on average (sd {trained['nfe_sd']:g}, {trained['nfe_min']} to "
            f"{trained['nfe_max']}); from rtol {loose['rtol']:g} to {tight['rtol']:g} the mean goes from "
            f"{loose['nfe_mean']:g} to {tight['nfe_mean']:g}. Spearman correlation of a sentence's NFE, where it "
            f"varies: {correlation}. Every sentence's NFE in its batch equalled its NFE alone at {same} of "
            f"{len(rows)} tolerances. Under batch-wide control the same batches cost "
            f"{trained['batch_over_alone']:g}x the sentences' own NFE at the trained tolerance and "
            f"{tight['batch_over_alone']:g}x at rtol {tight['rtol']:g}, where {tight['batch_pays_more_share']:.0%} of "
            f"sentences pay more than alone and {tight['batch_pays_less_share']:.0%} get fewer evaluations than they "
            f"need alone. What it means: where every sentence takes the same steps, per-sentence control changes "
            f"nothing; where steps vary (rtol {tight['rtol']:g}: {tight['nfe_min']} to {tight['nfe_max']} NFE), "
            f"longer sentences get {'more' if tight['spearman_nfe_length'] > 0 else 'less'} compute "
            f"(rho {tight['spearman_nfe_length']:+.2f}) and sentences the model finds harder "
            f"{'more' if tight['spearman_nfe_loss'] > 0 else 'less'} (rho {tight['spearman_nfe_loss']:+.2f}), and "
            f"batch-wide control moves evaluations between neighbours. BLEU against NFE over the same tolerances is "
            f"the model `dopri5-ft` on the elastic-depth page; its BLEU against the baseline is on the Multi30k "
            f"quality page.")


def _length_penalty(d: dict) -> str:
    rows = d["multi30k_length_penalty"]
    scores: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        family = scores.setdefault(r["model"].rsplit("-seed", 1)[0], {"recipe": [], "tuned": []})
        family["recipe"].append(r["test_bleu_recipe"])
        family["tuned"].append(r["test_bleu"])
    spread = "; ".join(f"{name}: {mean(f['recipe']):.2f} ± {stdev(f['recipe']):.2f} at 1, {mean(f['tuned']):.2f} ± "
                       f"{stdev(f['tuned']):.2f} tuned" for name, f in scores.items() if len(f["tuned"]) > 1)
    chosen = ", ".join(f"{r['model']} {r['lenpen']:g}" for r in rows)
    return (f"The length penalty chosen on the validation set, per model: {chosen}. Test BLEU over seeds (mean ± sd) "
            f"at the recipe's penalty and at the tuned one: {spread}. What it means: part of the seed-to-seed spread "
            f"is output length; the comparison over seeds is on the Multi30k quality page.")


def _lms(d: dict) -> str:
    rows, speed_rows = d["multi30k_lm"]["rows"], d["multi30k_lm_speed"]["rows"]
    plain, plain_speed = _by(rows, variant="plain"), _by(speed_rows, variant="plain")["train_tokens_per_second"]
    text = "; ".join(f"{r['variant']} {r['test_perplexity']:.2f} (p = {r['test_p_vs_plain']:.3f}, "
                     f"{r['test_nfe']:g} evaluations per pass)" for r in rows if r is not plain)
    speed = ", ".join(f"{r['variant']} {r['train_tokens_per_second'] / plain_speed:.2f}x" for r in speed_rows
                      if r["variant"] != "plain")
    return (f"Four language models of the same weights, {plain['updates']} updates each, one seed. Test perplexity: "
            f"plain {plain['test_perplexity']:.2f}; {text}. Training tokens/s against plain, each run alone on the "
            f"machine (`multi30k_lm_speed`; the long runs shared the cores): {speed}. What it means: the bootstrap "
            f"says the test set does not explain the differences, not that another seed would keep them.")


def _kinetic(d: dict) -> str:
    rows = d["kinetic"]["rows"]
    off, on = rows[0], rows[-1]
    nfe = 1 - float(on["train_nfe_f"]) / float(off["train_nfe_f"])
    decode = 1 - float(on["decode_nfe"]) / float(off["decode_nfe"])
    quality = "did not cost quality" if float(on["bleu"]) >= float(off["bleu"]) else "cost quality"
    return ("One adaptive model (dopri5) on the demo task, trained once per kinetic weight with the same seed: "
            + "; ".join(f"{r['variant']}: BLEU {r['bleu']}, training NFE {r['train_nfe_f']}, decoding NFE "
                        f"{r['decode_nfe']}" for r in rows)
            + f". With the penalty the solver needs {nfe:.0%} fewer evaluations per training forward pass and "
              f"{decode:.0%} fewer per decoded sentence (part of that is length: the unpenalised model writes longer "
              f"outputs). One seed, neither model converged: read the BLEU as \"the penalty {quality}\", not as a "
              f"measured difference.")


def _hf_checkpointing(d: dict) -> str:
    rows = d["hf_gradient_checkpointing"]["rows"]
    parts = [f"{r['model']} {r['method']} `{r['variant']}` {r['peak_vs_off']:.2f}x the memory at "
             f"{r['time_vs_off']:.2f}x the time" for r in rows if r["variant"] != "off"]
    largest = max(r["max_grad_diff_vs_off"] for r in rows)
    return "Against no checkpointing: " + "; ".join(parts) + f". Largest gradient difference: {largest:.3g}."


def _mixed_precision(d: dict) -> str:
    rows = d["mixed_precision"]["rows"]
    bf16 = [r for r in rows if r["precision"] != "float32"]
    parts = [f"{r['method']} {r['precision']}: {r['time_vs_float32']:.2f}x the time, {r['peak_vs_float32']:.2f}x the "
             f"memory, final loss {r['final_loss']:.3f} (float32 "
             f"{_by(rows, method=r['method'], precision='float32')['final_loss']:.3f})" for r in bf16]
    faster = any(r["time_vs_float32"] < 1 for r in bf16)
    return ("A training step of the HF seq2seq NODE model under bfloat16 autocast against float32, same "
            "initialisation: " + "; ".join(parts) + ". What it means: on this CPU bfloat16 saves activation "
            f"memory {'and' if faster else 'but is not'} faster; the loss follows float32's.")


def _fsdp(d: dict) -> str:
    rows = d["fsdp_parity_cpu"]["rows"]
    largest = max(r["max_loss_rel_difference"] for r in rows)
    return (f"FSDP2 and DDP over {max(r['processes'] for r in rows)} processes follow the one-process losses to a "
            f"relative difference of {largest:.2g}, with the same NFE: "
            f"{'yes' if all(r['same_nfe'] for r in rows) else 'no'}. The CPU run checks parity, not speed.")


def _row_compaction(d: dict) -> str:
    rows = d["row_compaction"]["rows"]
    sizes = sorted({r["batch_size"] for r in rows})
    compacted = {s: _by(rows, batch_size=s, solver="sequence, compacted") for s in sizes}
    per_row = {s: _by(rows, batch_size=s, solver="sequence") for s in sizes}
    batch = {s: _by(rows, batch_size=s, solver="batch") for s in sizes}
    fixed = {s: next(r for r in rows if r["batch_size"] == s and r["solver"].startswith("fixed")) for s in sizes}
    speed = "; ".join(f"batch {s}: {compacted[s]['ratio_to_sequence']:.2f}x, rows evaluated per sentence "
                      f"{compacted[s]['row_evaluations_per_sentence']:g} instead of "
                      f"{per_row[s]['row_evaluations_per_sentence']:g}" for s in sizes)
    others = "; ".join(f"batch {s}: batch-wide control {batch[s]['ratio_to_sequence']:.2f}x, {fixed[s]['solver']} "
                       f"{fixed[s]['ratio_to_sequence']:.2f}x (BLEU {batch[s]['bleu']:.2f} and {fixed[s]['bleu']:.2f} "
                       f"against {compacted[s]['bleu']:.2f})" for s in sizes)
    paying = [s for s in sizes if compacted[s]["ratio_to_sequence"] >= 1.05]
    not_paying = [s for s in sizes if s not in paying]
    where = (f"compaction pays (5% or more) at batch sizes {', '.join(map(str, paying)) or 'none measured'} and does "
             f"not at {', '.join(map(str, not_paying)) or 'none measured'}")
    differing = sum(compacted[s]["translations_differing_from_sequence"] for s in sizes)
    return (f"Words/s of the test set's beam-5 decoding against per-sentence control without compaction (median "
            f"ratio over {d['row_compaction']['meta']['rounds']} interleaved round(s)). With compaction: {speed}. The "
            f"other solvers of the same weights: {others}. Compacted and uncompacted translations differ in "
            f"{differing} sentence(s) over all batch sizes. What it means: {where}; the work a compacted decode does "
            f"is each sentence's own, whatever the batch.")

ADAPTIVE_COLUMNS = ("rtol", "sentences", "nfe_mean", "nfe_sd", "nfe_min", "nfe_median", "nfe_max",
                    "spearman_nfe_length", "spearman_nfe_loss", "sequence_differs_from_alone", "alone_nfe_mean",
                    "batch_control_nfe_mean", "batch_over_alone", "batch_pays_more_share", "batch_pays_less_share")

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
    Topic("adaptive-sentences", "Adaptive computation per sentence (Multi30k)",
          (Result("adaptive_sentences", "bash benchmarks/adaptive_multi30k.sh", columns=ADAPTIVE_COLUMNS,
                  plots=("adaptive_sentences_nfe.png", "adaptive_sentences_length.png")),
           Result("adaptive_vs_euler", "bash benchmarks/adaptive_multi30k.sh (its second quality record)")),
          _adaptive_sentences),
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
    Topic("row-compaction", "Row compaction: per-sentence control, evaluating only the sentences still stepping",
          (Result("row_compaction", "python -m benchmarks.row_compaction DATA_DIR OUT_DIR --model CHECKPOINT"),),
          _row_compaction),
)


def render(topic: Topic, results: Path) -> tuple[str, list[tuple[Path, str]]]:
    """One topic's page and the plots it shows (each with the file name it has beside the page); a topic
    whose result files are not there yet says which command writes them."""
    missing = [r for r in topic.results if not (results / f"{r.name}.json").is_file()]
    if missing:
        lines = [f"`benchmarks/results/{r.name}.json` is written by `{r.command or 'its benchmark'}`." for r in missing]
        return "\n".join([f"# {topic.title}", "", "Not measured yet. " + " ".join(lines), ""]), []
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


def _write(path: Path, data: bytes) -> None:
    """Write only what changed: ``mkdocs serve`` rebuilds on every write into the docs folder."""
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def write_results_pages(out_dir: str | Path, results: str | Path = RESULTS) -> list[Path]:
    """Write ``index.md``, one page per topic, their plots and the archive into ``out_dir``; return the pages."""
    out, results = Path(out_dir), Path(results)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for topic in TOPICS:
        page, plots = render(topic, results)
        _write(out / f"{topic.slug}.md", page.encode("utf-8"))
        written.append(out / f"{topic.slug}.md")
        for png, shown in plots:
            _write(out / shown, png.read_bytes())
    index = ["# Results", "", "Every page below is generated from `benchmarks/results/*.json` by "
             "`python -m benchmarks.pages`; the dated history is in the [archive](archive.md).", ""]
    index += [f"- [{t.title}]({t.slug}.md)" for t in TOPICS]
    _write(out / "index.md", ("\n".join(index) + "\n").encode("utf-8"))
    _write(out / "archive.md", ARCHIVE.read_bytes())
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
