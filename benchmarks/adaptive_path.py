"""Where an adaptive NODE-Transformer's evaluations go, and what each change to the adaptive path saves.

One training step (forward and backward through fairseq's criterion) of ``node_transformer_small``
on real Multi30k batches, for each variant below, from the same weights (a fresh initialisation, or
``--checkpoint``) and the same dropout seed, interleaved in rounds with the plain model (the same
weights as plain pre-norm layers): a round's ratio is variant time / plain time on that round's
batch; the table gives medians. Per variant: NFE forward and backward per update (all six layers),
accepted and rejected steps per solve, where the forward time goes (inside the vector field, or
elsewhere: the solver loop and the rest of the model), and how far the decoder's output is from a
tight-tolerance solve (rtol 1e-7) of the same model in eval mode, against the same distance for the
"before" variant::

    python -m benchmarks.adaptive_path --data /path/to/multi30k/bin --out benchmarks/results/adaptive_path

"before" is what ``--node-rtol 0.01`` ran until issue #16: torchdiffeq's loop and its first-step
estimate. Every variant solves the same ODE to the same tolerances; only the steps differ.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from node_seq.ode import adaptive_loop

from .common import add_common_args, command_line, machine, markdown_table, write_outputs

# Every NODE variant controls its steps batch-wide: the loops compared (ours and torchdiffeq's, issue
# #16) are batch-wide controllers, and torchdiffeq has no other.
RTOL = ["--node-rtol", "0.01", "--node-step-control", "batch"]
#: name -> (fairseq flags, step loop); the plain model is the baseline.
VARIANTS: dict[str, tuple[list[str], str]] = {
    "plain layers (baseline)": (["--no-node-encoder", "--no-node-decoder"], "own"),
    "before: torchdiffeq loop, estimated first step": ([*RTOL, "--node-initial-step", "estimate"], "torchdiffeq"),
    "torchdiffeq loop, first step = interval": ([*RTOL, "--node-initial-step", "interval"], "torchdiffeq"),
    "own loop, estimated first step": ([*RTOL, "--node-initial-step", "estimate"], "own"),
    "after: own loop, first step = interval (default)": (RTOL, "own"),
    "after, atol 1e-2 (the seed's)": ([*RTOL, "--node-atol", "0.01"], "own"),
    "bosh3, first step = interval": ([*RTOL, "--node-method", "bosh3"], "own"),
}
BASELINE = "plain layers (baseline)"
BEFORE = "before: torchdiffeq loop, estimated first step"
RECIPE = ["--share-all-embeddings", "--dropout", "0.3", "--attention-dropout", "0.1", "--optimizer", "adam",
          "--lr", "1e-3", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
          "--seed", "1", "--num-workers", "0"]


def timed_field(totals: dict) -> contextlib.AbstractContextManager:
    """Add the wall time spent inside vector-field evaluations to ``totals['field']``."""
    from node_seq.ode import observe_evaluations

    def timed(func, t, y, *inputs):
        start = time.perf_counter()
        try:
            return func(t, y, *inputs)
        finally:
            totals["field"] += time.perf_counter() - start

    return observe_evaluations(timed)


def build(data: str, arch: str, flags: list[str], max_tokens: int, state: dict | None):
    from fairseq import tasks

    from node_seq.fairseq import inprocess

    args = inprocess.parse([data, "--arch", arch, *RECIPE, "--max-tokens", str(max_tokens), *flags])
    torch.manual_seed(1)
    task = tasks.setup_task(args)
    model = task.build_model(args)
    if state is not None:
        model.load_state_dict(state)
    return task, model, task.build_criterion(args)


def batches(task, max_tokens: int, count: int) -> list[dict]:
    task.load_dataset("train")
    iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=max_tokens, seed=1,
                                       max_positions=(1024, 1024)).next_epoch_itr(shuffle=True)
    return [sample for sample, _ in zip(iterator, range(count))]


def train_step(model, criterion, sample, seed: int) -> dict:
    """One forward and backward pass; its time, where the forward time went, and the solves' counts."""
    from node_seq.nn.layers import node_layers

    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    totals = {"field": 0.0}
    with timed_field(totals):
        start = time.perf_counter()
        loss, _, _ = criterion(model, sample)
        forward = time.perf_counter() - start
        loss.backward()
        total = time.perf_counter() - start
    layers = node_layers(model)
    stats = [layer.last_stats for layer in layers]
    return {"seconds": total, "forward_seconds": forward, "field_forward_seconds": totals["field"],
            "nfe_f": sum(s.nfe_forward for s in stats), "nfe_b": sum(s.nfe_backward for s in stats),
            "accepted": sum(s.num_accepted for s in stats), "rejected": sum(s.num_rejected for s in stats),
            "solves": len(stats), "per_layer": [[s.nfe_forward, s.num_accepted, s.num_rejected] for s in stats]}


def decoder_output(model, sample) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        features, _ = model(**sample["net_input"], features_only=True)
    return features


def profile_table(model, criterion, sample, loop: str, rows: int = 15) -> str:
    """torch.profiler's operators by self CPU time over one training step (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with adaptive_loop(loop), profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, criterion, sample, seed=0)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/multi30k/bin", help="fairseq-binarised Multi30k (or any pair); "
                        "--quick uses the embedded numbers task instead")
    parser.add_argument("--work", default="/tmp/bench_work/adaptive_path", help="--quick's data folder")
    parser.add_argument("--arch", default="node_transformer_small")
    parser.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (the recipe's)")
    parser.add_argument("--checkpoint", default=None, help="start from these weights (e.g. a trained model's)")
    parser.add_argument("--variants", default=None, help="comma-separated indices into the variant list (0: plain)")
    parser.add_argument("--profile", action="store_true",
                        help="also write <out>_profile.txt: torch.profiler's top operators of one step per variant")
    add_common_args(parser, default_out="benchmarks/results/adaptive_path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = args.repeats or (1 if args.quick else 3)
    if args.quick:
        from .fairseq_runs import prepare_numbers

        args.data = str(prepare_numbers(Path(args.work), train=200, valid=20, test=20))
        args.arch, args.max_tokens = "node_transformer_tiny", 256
    names = list(VARIANTS)
    if args.variants:
        names = [names[int(i)] for i in args.variants.split(",")]
    names = [BASELINE, *[n for n in names if n != BASELINE]]

    state = None
    if args.checkpoint:
        import node_seq.fairseq  # noqa: F401  (allow-lists what a fairseq checkpoint holds for weights_only loading)

        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["model"]
    models = {name: build(args.data, args.arch, VARIANTS[name][0], args.max_tokens, state) for name in names}
    task = models[BASELINE][0]
    state = state or models[BASELINE][1].state_dict()
    for name in names:
        models[name][1].load_state_dict(state)  # the same weights everywhere
    samples = batches(task, args.max_tokens, rounds)

    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r, sample in enumerate(samples):
        for name in names[r % len(names):] + names[: r % len(names)]:
            _, model, criterion = models[name]
            with adaptive_loop(VARIANTS[name][1]):
                runs[name].append(train_step(model, criterion, sample, seed=r))

    # What is solved: the decoder's output against a tight solve of the same weights (eval mode).
    _, reference_model, _ = build(args.data, args.arch, ["--node-rtol", "1e-7", "--node-atol", "1e-9"],
                                  args.max_tokens, state)
    reference = decoder_output(reference_model.double(), {"net_input": samples[0]["net_input"]})
    rows = []
    for name in names:
        _, model, _ = models[name]
        with adaptive_loop(VARIANTS[name][1]):
            deviation = None
            if name != BASELINE:
                out = decoder_output(model, samples[0]).double()
                deviation = float((out - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())
        ratios = [run["seconds"] / base["seconds"] for run, base in zip(runs[name], runs[BASELINE])]
        solves = max(runs[name][0]["solves"], 1)
        rows.append({
            "variant": name, "flags": " ".join(VARIANTS[name][0]), "loop": VARIANTS[name][1],
            "time_ratio_to_plain": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "speed_vs_plain": 1 / statistics.median(ratios),
            "seconds_median": statistics.median(run["seconds"] for run in runs[name]),
            "nfe_f_per_update": statistics.mean(run["nfe_f"] for run in runs[name]),
            "nfe_b_per_update": statistics.mean(run["nfe_b"] for run in runs[name]),
            "accepted_per_solve": statistics.mean(run["accepted"] for run in runs[name]) / solves,
            "rejected_per_solve": statistics.mean(run["rejected"] for run in runs[name]) / solves,
            "field_share_of_forward": statistics.median(run["field_forward_seconds"] / run["forward_seconds"]
                                                        for run in runs[name]),
            "forward_share": statistics.median(run["forward_seconds"] / run["seconds"] for run in runs[name]),
            "relative_rms_deviation_from_tight_solve": deviation,
            "runs": runs[name],
        })
    header = ["variant", "NFE-F / update", "NFE-B / update", "accepted / solve", "rejected / solve",
              "time / plain (median)", "range", "speed vs plain", "field share of fwd", "rel. deviation from rtol 1e-7"]
    table = markdown_table(header, [[
        row["variant"], row["nfe_f_per_update"], row["nfe_b_per_update"], row["accepted_per_solve"],
        row["rejected_per_solve"], row["time_ratio_to_plain"], "{:.2f}-{:.2f}".format(*row["ratio_range"]),
        row["speed_vs_plain"], row["field_share_of_forward"],
        "-" if row["relative_rms_deviation_from_tight_solve"] is None
        else f"{row['relative_rms_deviation_from_tight_solve']:.2e}"] for row in rows])
    meta = {"machine": machine(), "device": "cpu", "rounds": rounds, "max_tokens": args.max_tokens,
            "arch": args.arch, "checkpoint": args.checkpoint,
            "batches": [[int(s["nsentences"]), int(s["ntokens"])] for s in samples]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_outputs(args.out, command=command_line("benchmarks.adaptive_path", argv), meta=meta, rows=rows, table=table)
    print(table)
    if args.profile:
        with open(f"{args.out}_profile.txt", "w", encoding="utf-8") as f:
            for name in names:
                _, model, criterion = models[name]
                f.write(f"== {name}\n{profile_table(model, criterion, samples[0], VARIANTS[name][1])}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
