"""``fairseq-generate`` speed of a fixed-grid NODE decoder, with and without its per-stage cache.

Three ways to decode with the same number of vector-field evaluations per token:

* a NODE model (1 + 1 tied ODE layers, euler with ``L`` steps) with the per-stage key/value cache;
* the same checkpoint without it (``--model-overrides "{'node_incremental_cache': False}"``, the
  same as training with ``--no-node-incremental-cache``): every token recomputes the prefix;
* fairseq's pre-norm ``transformer`` with ``L`` + ``L`` layers of the same width.

Every output is forced to the same length (``--min-len N --max-len-a 0 --max-len-b N``) so models
that have learnt different things still do the same work. Runs are interleaved in rounds; the
report gives sentences/s and the median per-round ratio to the plain Transformer (bar: cached
>= 0.9x; and several times faster than recompute)::

    python -m benchmarks.decoding --out benchmarks/results/decoding
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from .common import add_common_args, command_line, machine, markdown_table, write_outputs
from .fairseq_runs import fairseq_generate, fairseq_train, model_args, prepare_numbers

NO_CACHE = ["--model-overrides", "{'node_incremental_cache': False}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/bench_work/decoding", help="data, checkpoints")
    parser.add_argument("--lengths", default=None, help="forced output lengths (default 16,32)")
    parser.add_argument("--beam", type=int, default=4)
    add_common_args(parser, default_out="benchmarks/results/decoding")
    args = parser.parse_args(argv)
    work = Path(args.work)
    if args.quick:
        dim, ffn, heads, layers, updates, rounds, default_lengths = 16, 32, 2, 3, 2, args.repeats or 1, "8"
        data = prepare_numbers(work, train=300, valid=20, test=16)
    else:
        dim, ffn, heads, layers, updates, rounds, default_lengths = 64, 128, 4, 3, 30, args.repeats or 3, "16,32"
        data = prepare_numbers(work, train=4000, valid=50, test=100)
    lengths = [int(n) for n in (args.lengths or default_lengths).split(",")]
    train = dict(max_update=updates, log_interval=max(1, updates), device=args.device, threads=args.threads, save=True)
    models = {
        "node": model_args(arch="node_transformer", dim=dim, ffn=ffn, heads=heads, layers=1,
                           extra=["--node-method", "euler", "--node-steps", str(layers)]),
        "transformer": model_args(arch="transformer", dim=dim, ffn=ffn, heads=heads, layers=layers),
    }
    checkpoints = {}
    for name, model in models.items():
        fairseq_train(data, work / name, model, **train)
        checkpoints[name] = work / name / "checkpoint_last.pt"
    variants = {
        f"transformer (fairseq), {layers}+{layers} layers": ("transformer", []),
        f"NODE 1+1 layers, euler {layers} steps, per-stage cache": ("node", []),
        f"NODE 1+1 layers, euler {layers} steps, no cache (prefix recompute)": ("node", NO_CACHE),
    }
    names = list(variants)
    rows = []
    for length in lengths:
        generate = ["--beam", str(args.beam), "--max-tokens", "4000", "--min-len", str(length),
                    "--max-len-a", "0", "--max-len-b", str(length)]
        speed: dict[str, list[float]] = {name: [] for name in names}
        results: dict[str, dict] = {}
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                model, extra = variants[name]
                results[name] = fairseq_generate(data, checkpoints[model], [*generate, *extra], device=args.device,
                                                 threads=args.threads)
                speed[name].append(results[name]["sentences_per_s"])
                print(f"length {length} round {r}: {name}: {speed[name][-1]:.2f} sentences/s", flush=True)
        base = speed[names[0]]
        for name in names:
            ratios = [s / b for s, b in zip(speed[name], base)]
            rows.append({"length": length, "variant": name, "sentences_per_s": statistics.median(speed[name]),
                         "ratio_to_transformer": statistics.median(ratios), "ratios": ratios,
                         "tokens": results[name]["tokens"], "sentences": results[name]["sentences"],
                         "nfe_per_sentence": results[name]["nfe_per_sentence"]})
    for length in lengths:
        mine = {r["variant"]: r for r in rows if r["length"] == length}
        cached, recompute = mine[names[1]], mine[names[2]]
        cached["speedup_over_recompute"] = cached["sentences_per_s"] / recompute["sentences_per_s"]
    table = markdown_table(
        ["output length", "decoder", "sentences/s (median)", "ratio to transformer", "NODE NFE / sentence",
         "bar"],
        [[r["length"], r["variant"], r["sentences_per_s"], r["ratio_to_transformer"],
          r["nfe_per_sentence"] if r["nfe_per_sentence"] is not None else "-",
          ("baseline" if r["variant"] == names[0] else
           f"{'yes' if r['ratio_to_transformer'] >= 0.9 else 'no'} (>= 0.9x); "
           f"{r['speedup_over_recompute']:.1f}x recompute" if "speedup_over_recompute" in r else "")]
         for r in rows])
    meta = {"machine": machine(), "device": args.device, "threads": args.threads, "rounds": rounds, "dim": dim,
            "ffn": ffn, "heads": heads, "layers": layers, "beam": args.beam, "train_updates": updates,
            "test_sentences": rows[0]["sentences"], "data": str(data)}
    table += (f"\n\nWidth {dim}, ffn {ffn}, {heads} heads; beam {args.beam}; {rows[0]['sentences']} test sentences; "
              f"every hypothesis forced to the output length; models trained {updates} updates.")
    write_outputs(args.out, command=command_line("benchmarks.decoding", argv), meta=meta, rows=rows, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
