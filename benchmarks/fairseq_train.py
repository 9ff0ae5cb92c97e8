"""Training throughput of ``node_transformer`` against fairseq's ``transformer``, and adaptive NFE.

Every model makes the same vector-field evaluations per update: fairseq's pre-norm ``transformer``
with ``L`` encoder and ``L`` decoder layers is the baseline; ``node_transformer`` runs

* its plain layers, untied (``--no-node-encoder --no-node-decoder``, ``L`` + ``L`` layers),
* one tied ODE layer per side with ``L`` euler steps (weights shared across the ``L`` evaluations),
(``L`` untied ODE layers with one unit euler step each are the plain layers: a unit euler step of
a pre-norm field is exactly the layer, and node-seq runs it as one.)

Throughput is fairseq's own ``wps`` (target tokens per second) of each log interval after the first
(warm-up), median per run; runs are interleaved in rounds and the reported ratio to the baseline is
the median over rounds (bar: >= 0.95). A second part trains with adaptive dopri5 at rtol 1e-2 and
reports the NFE per update over training, and how many backward evaluations the seminorm saves
the adjoint::

    python -m benchmarks.fairseq_train --out benchmarks/results/fairseq_train
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from .common import add_common_args, command_line, machine, markdown_table, write_outputs
from .fairseq_runs import fairseq_train, model_args, prepare_numbers, train_intervals


def throughput_variants(dim: int, ffn: int, heads: int, layers: int) -> dict[str, list[str]]:
    euler = ["--node-method", "euler"]
    return {
        f"transformer (fairseq), {layers}+{layers} layers": model_args(
            arch="transformer", dim=dim, ffn=ffn, heads=heads, layers=layers),
        f"node_transformer plain layers, {layers}+{layers}": model_args(
            arch="node_transformer", dim=dim, ffn=ffn, heads=heads, layers=layers,
            extra=["--no-node-encoder", "--no-node-decoder"]),
        f"node_transformer tied: 1+1 ODE layers, euler {layers} steps": model_args(
            arch="node_transformer", dim=dim, ffn=ffn, heads=heads, layers=1,
            extra=[*euler, "--node-steps", str(layers)]),
    }


def adaptive_variants(dim: int, ffn: int, heads: int) -> dict[str, list[str]]:
    dopri = ["--node-method", "dopri5", "--node-rtol", "1e-2", "--node-atol", "1e-3"]
    base = dict(arch="node_transformer", dim=dim, ffn=ffn, heads=heads, layers=1)
    return {
        "dopri5 rtol 1e-2, backprop": model_args(**base, extra=[*dopri, "--node-gradient", "backprop"]),
        "dopri5 rtol 1e-2, adjoint": model_args(**base, extra=[*dopri, "--node-gradient", "adjoint"]),
        "dopri5 rtol 1e-2, adjoint + seminorm": model_args(
            **base, extra=[*dopri, "--node-gradient", "adjoint", "--node-seminorm"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairseq_train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/bench_work/fairseq_train", help="data and run folders")
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--no-adaptive", action="store_true", help="skip the dopri5 part")
    add_common_args(parser, default_out="benchmarks/results/fairseq_train")
    args = parser.parse_args(argv)
    work = Path(args.work)
    if args.quick:
        dim, ffn, heads, layers, updates, interval, rounds = 16, 32, 2, 3, args.updates or 6, 2, args.repeats or 1
        data = prepare_numbers(work, train=300, valid=20, test=20)
    else:
        dim, ffn, heads, layers, updates, interval, rounds = 64, 128, 4, 3, args.updates or 40, 5, args.repeats or 3
        data = prepare_numbers(work, train=4000, valid=50, test=100)
    runs = dict(max_update=updates, log_interval=interval, device=args.device, threads=args.threads)

    variants = throughput_variants(dim, ffn, heads, layers)
    names = list(variants)
    baseline = names[0]
    wps: dict[str, list[float]] = {name: [] for name in names}
    nfe: dict[str, str] = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            intervals = train_intervals(fairseq_train(data, work / f"run{names.index(name)}", variants[name], **runs))
            timed = intervals[1:] or intervals  # the first interval holds start-up and warm-up
            wps[name].append(statistics.median(float(x["wps"]) for x in timed))
            last = intervals[-1]
            nfe[name] = f"{last.get('nfe_f', '-')}/{last.get('nfe_b', '-')}"
            print(f"round {r}: {name}: {wps[name][-1]:.0f} wps", flush=True)
    rows = []
    for name in names:
        ratios = [w / b for w, b in zip(wps[name], wps[baseline])]
        rows.append({"part": "throughput", "variant": name, "wps_median": statistics.median(wps[name]),
                     "ratio": statistics.median(ratios), "ratios": ratios, "nfe_f_b": nfe[name],
                     "evaluations_per_side": layers})
    table = markdown_table(
        ["model (width %d, ffn %d, %d heads)" % (dim, ffn, heads), "NFE f/b per update (logged)",
         "target tokens/s (median)", "ratio to fairseq transformer", "bar >= 0.95"],
        [[r["variant"], r["nfe_f_b"] if r["nfe_f_b"] != "-/-" else f"({layers}+{layers} layers)", r["wps_median"],
          r["ratio"], "baseline" if r["variant"] == baseline else ("yes" if r["ratio"] >= 0.95 else "no")]
         for r in rows])

    if not args.no_adaptive:
        adaptive = adaptive_variants(dim, ffn, heads)
        per_interval = {}
        for k, (name, extra) in enumerate(adaptive.items()):
            intervals = train_intervals(fairseq_train(data, work / f"adaptive{k}", extra, **runs))
            per_interval[name] = [(int(x["num_updates"]), float(x["nfe_f"]), float(x["nfe_b"])) for x in intervals]
            rows.append({"part": "adaptive", "variant": name, "per_interval": per_interval[name],
                         "nfe_f_mean": statistics.mean(x[1] for x in per_interval[name]),
                         "nfe_b_mean": statistics.mean(x[2] for x in per_interval[name])})
            print(f"{name}: nfe f/b per interval {per_interval[name]}", flush=True)
        adaptive_rows = [r for r in rows if r["part"] == "adaptive"]
        plain_b = adaptive_rows[1]["nfe_b_mean"]
        semi_b = adaptive_rows[2]["nfe_b_mean"]
        updates_col = [u for u, _, _ in per_interval[adaptive_rows[0]["variant"]]]
        table += "\n\nAdaptive dopri5, rtol 1e-2, atol 1e-3, 1+1 ODE layers; NFE per update (forward/backward), " \
                 "averaged over each log interval:\n\n"
        table += markdown_table(
            ["variant", *[f"update {u}" for u in updates_col], "mean NFE-F", "mean NFE-B"],
            [[r["variant"], *[f"{f:.0f}/{b:.0f}" for _, f, b in r["per_interval"]], r["nfe_f_mean"], r["nfe_b_mean"]]
             for r in adaptive_rows])
        saved = 1 - semi_b / plain_b if plain_b else float("nan")
        table += f"\n\nSeminorm: mean backward NFE {plain_b:.1f} -> {semi_b:.1f} ({100 * saved:.0f}% saved)."
        rows.append({"part": "seminorm", "nfe_b_adjoint": plain_b, "nfe_b_seminorm": semi_b, "saved": saved})

    meta = {"machine": machine(), "device": args.device, "threads": args.threads, "updates": updates,
            "log_interval": interval, "rounds": rounds, "dim": dim, "ffn": ffn, "heads": heads, "layers": layers,
            "data": str(data), "max_tokens": 1024}
    write_outputs(args.out, command=command_line("benchmarks.fairseq_train", argv), meta=meta, rows=rows, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
