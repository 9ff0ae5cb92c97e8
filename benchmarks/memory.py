"""Peak memory of one forward + backward solve against the number of steps, per gradient mode.

The vector field is a Transformer encoder layer (``EncoderField``); the solver is euler, which
every gradient mode accepts. Bar: at 64 steps, ``checkpoint``, ``adjoint`` and ``reversible`` stay
within 1.25x of their own 2-step peak while ``backprop`` grows with the steps. ``checkpoint:S`` is
``checkpoint`` with ``checkpoint_snapshots=S`` (binomial schedule); plain ``checkpoint`` stores one
state per step.

Peak memory on a GPU is ``torch.cuda.max_memory_allocated`` above what was allocated before the
pass; on the CPU it is the peak of live tensor storage created during the pass, counted by
``node_seq.memory.LiveTensorBytes`` (parameters and the input state excluded, gradients included)::

    python -m benchmarks.memory --out benchmarks/results/memory
"""

from __future__ import annotations

import argparse
import time

import torch

from node_seq.memory import LiveTensorBytes
from node_seq.plotting import plot
from node_seq.nn.fields import EncoderField
from node_seq.ode import solve

from .common import add_common_args, command_line, machine, markdown_table, write_outputs

GRADIENTS = ("backprop", "checkpoint", "checkpoint:4", "adjoint", "reversible")


def peak_of_step(field: torch.nn.Module, y0: torch.Tensor, *, method: str, steps: int, gradient: str) -> dict:
    """Peak bytes, seconds and NFE of one ``solve`` + ``.backward()`` of a scalar loss."""
    gradient, _, snapshots = gradient.partition(":")
    options = dict(method=method, steps=steps, gradient=gradient,
                   checkpoint_snapshots=int(snapshots) if snapshots else None)
    for p in field.parameters():
        p.grad = None
    y0.grad = None
    start = time.perf_counter()
    if y0.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        y1, stats = solve(field, y0, inputs=(None,), **options)
        y1.square().mean().backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with LiveTensorBytes() as tracker:
            y1, stats = solve(field, y0, inputs=(None,), **options)
            y1.square().mean().backward()
        peak = tracker.peak
    return {"peak_bytes": int(peak), "seconds": time.perf_counter() - start, "nfe_forward": stats.nfe_forward,
            "nfe_backward": stats.nfe_backward}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=None, help="comma-separated step counts (default 2..64)")
    parser.add_argument("--gradients", default=",".join(GRADIENTS))
    parser.add_argument("--method", default="euler")
    add_common_args(parser, default_out="benchmarks/results/memory")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dim, batch, length = (32, 4, 8) if args.quick else (256, 32, 32)
    steps_list = [int(s) for s in (args.steps or ("2,4,8" if args.quick else "2,4,8,16,32,64")).split(",")]
    field = EncoderField(dim, 4, 4 * dim, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         activation="relu", time_dependent=False).to(args.device)
    y0 = torch.randn(batch, length, dim, device=args.device, requires_grad=True)
    state_mib = y0.numel() * y0.element_size() / 2**20
    rows = []
    for gradient in args.gradients.split(","):
        for steps in steps_list:
            row = {"gradient": gradient, "steps": steps,
                   **peak_of_step(field, y0, method=args.method, steps=steps, gradient=gradient)}
            rows.append(row)
            print(f"{gradient:>10} steps {steps:>3}: peak {row['peak_bytes'] / 2**20:8.2f} MiB  "
                  f"nfe {row['nfe_forward']}/{row['nfe_backward']}  {row['seconds']:.2f}s", flush=True)
    first, last = min(steps_list), max(steps_list)
    summary = []
    for gradient in dict.fromkeys(r["gradient"] for r in rows):
        peaks = {r["steps"]: r["peak_bytes"] for r in rows if r["gradient"] == gradient}
        growth = peaks[last] / peaks[first]
        meets = "(grows, as expected)" if gradient == "backprop" else ("yes" if growth <= 1.25 else "no")
        summary.append({"gradient": gradient, "growth": growth, "meets_bar": meets})
    meta = {"machine": machine(), "device": args.device, "method": args.method, "embed_dim": dim,
            "batch": batch, "length": length, "state_mib": state_mib, "summary": summary,
            "measure": "cuda max_memory_allocated" if args.device != "cpu" else "live tensor storage bytes"}
    header = ["gradient", *[f"{s} steps (MiB)" for s in steps_list], f"{last} / {first} steps", "bar (<= 1.25x)",
              f"NFE f/b at {last} steps"]
    table_rows = []
    for s in summary:
        mine = [r for r in rows if r["gradient"] == s["gradient"]]
        table_rows.append([s["gradient"], *[r["peak_bytes"] / 2**20 for r in mine], f"{s['growth']:.2f}x",
                           s["meets_bar"], f"{mine[-1]['nfe_forward']}/{mine[-1]['nfe_backward']}"])
    table = markdown_table(header, table_rows)
    table += (f"\n\nState: {batch}x{length}x{dim} fp32 = {state_mib:.2f} MiB; method {args.method}. "
              f"Plot: `{args.out}.png`.")
    write_outputs(args.out, command=command_line("benchmarks.memory", argv), meta=meta, rows=rows, table=table)
    plot(rows, args.out + ".png", title=f"EncoderField d={dim}, {batch}x{length}, {args.method}, {args.device}",
         xlabel="euler steps", ylabel="peak memory of forward + backward (MiB)", log_y=True)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
