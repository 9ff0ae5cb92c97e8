"""Peak memory of one training step against the number of solver steps, per gradient mode.

``backprop`` keeps every stage's activations, so its memory grows with the steps; ``checkpoint``
keeps one state per step (small growth); ``adjoint`` and ``reversible`` keep only the final state.

On a GPU this reads ``torch.cuda.max_memory_allocated``; on the CPU it is the peak of live tensor
storage created by the step (``node_seq.memory.LiveTensorBytes``: parameters and the input batch
excluded)::

    python -m vision.memory --steps 1,2,4,8,16,32 --out vision/results/memory
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from node_seq.memory import LiveTensorBytes
from node_seq.plotting import plot
from node_seq.ode import SolverConfig

from .models import create_model


def measure(model: torch.nn.Module, x: torch.Tensor, solver: SolverConfig) -> dict:
    """Peak bytes and wall time of one forward + backward pass with ``solver``."""
    model.set_solver(solver)
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if x.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model(x).logsumexp(1).mean().backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with LiveTensorBytes() as tracker:
            model(x).logsumexp(1).mean().backward()
        peak = tracker.peak
    stats = model.solve_stats()
    return {"peak_bytes": int(peak), "seconds": time.perf_counter() - start, "nfe_forward": stats.nfe_forward,
            "nfe_backward": stats.nfe_backward}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="odenet4")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--input-shape", default="3,32,32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="euler", help="fixed-grid method (euler works with every mode)")
    parser.add_argument("--steps", default="1,2,4,8,16,32")
    parser.add_argument("--gradients", default="backprop,checkpoint,adjoint,reversible")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="path prefix for <out>.json and <out>.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(int(s) for s in args.input_shape.split(","))
    model = create_model(args.model, num_classes=10, input_shape=shape, width=args.width).to(args.device)
    x = torch.randn(args.batch_size, *shape, device=args.device)
    rows = []
    for gradient in args.gradients.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            solver = SolverConfig(method=args.method, steps=steps, gradient=gradient).validate(
                option_names={"gradient": "--gradients", "method": "--method"})
            row = {"gradient": gradient, "steps": steps, **measure(model, x, solver)}
            rows.append(row)
            print(f"{gradient:>10} steps {steps:>4}: peak {row['peak_bytes'] / 2**20:8.2f} MiB  "
                  f"nfe {row['nfe_forward']}/{row['nfe_backward']}  {row['seconds']:.2f}s", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        meta = {"model": args.model, "width": args.width, "input_shape": shape, "batch_size": args.batch_size,
                "method": args.method, "device": args.device, "torch": torch.__version__,
                "measure": "cuda max_memory_allocated" if args.device != "cpu" else "live tensor storage bytes"}
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        plot(rows, args.out + ".png", title=f"{args.model} width {args.width}, batch {args.batch_size}, "
                                             f"{args.method}, {args.device}")
        print(f"wrote {args.out}.json, {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
