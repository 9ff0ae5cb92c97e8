"""Peak memory of one training step against the number of solver steps, per gradient mode.

``backprop`` keeps every stage's activations, so its memory grows with the steps; ``checkpoint``
keeps one state per step (small growth); ``adjoint`` and ``reversible`` keep only the final state.

On a GPU this reads ``torch.cuda.max_memory_allocated``. On the CPU, where PyTorch reports no
allocator statistics, a dispatch mode watches every tensor an operation creates and counts its
storage's bytes until the last tensor that uses it is freed: the peak of that count is the peak
memory of tensors created by the step (parameters and the input batch excluded)::

    python -m vision.memory --steps 1,2,4,8,16,32 --out vision/results/memory
"""

from __future__ import annotations

import argparse
import json
import os
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from node_seq.ode import SolverConfig

from .models import create_model


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of live storages created by operations run under it, and their peak."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}  # storage pointer -> live tensors using it
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.live -= self.sizes.pop(ptr)
            del self.refs[ptr]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr == 0 or size == 0:
            return
        if ptr not in self.refs:
            self.refs[ptr], self.sizes[ptr] = 0, size
            self.live += size
            self.peak = max(self.peak, self.live)
        self.refs[ptr] += 1
        weakref.finalize(tensor, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t)
        return out


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
    parser = argparse.ArgumentParser(prog="python -m vision.memory", description=__doc__.split("\n\n")[0])
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


def plot(rows: list[dict], path: str, title: str, *, xlabel: str = "solver steps per ODE block",
         ylabel: str = "peak memory of one training step (MiB)", log_y: bool = False) -> None:
    """Peak memory (MiB) against steps, one line per gradient mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for gradient in dict.fromkeys(r["gradient"] for r in rows):
        points = [(r["steps"], r["peak_bytes"] / 2**20) for r in rows if r["gradient"] == gradient]
        ax.plot(*zip(*points), marker="o", label=gradient)
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
