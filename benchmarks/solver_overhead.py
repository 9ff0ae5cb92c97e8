"""The fixed-grid overhead of ``node_seq.ode.solve`` against a hand-written loop and torchdiffeq.

For each vector field (a Transformer encoder layer, a small conv block), method (euler, midpoint,
rk4) and pass (forward only, forward + backward) three implementations make the same vector-field
calls on the same grid:

* ``loop``: a hand-written Python loop, the floor any solver is measured against;
* ``solve``: ``node_seq.ode.solve(..., gradient="backprop")``;
* ``torchdiffeq``: ``torchdiffeq.odeint`` with the same uniform grid.

They run interleaved in the same rounds and the report gives the median per-round ratio to the
loop (bar: ``solve`` at most 1.05x) and ``solve``/``torchdiffeq``::

    python -m benchmarks.solver_overhead --out benchmarks/results/solver_overhead
"""

from __future__ import annotations

import argparse

import torch
import torchdiffeq
from torch import nn

from node_seq.nn.fields import EncoderField
from node_seq.ode import solve

from .common import add_common_args, command_line, interleaved_ratios, machine, markdown_table, write_outputs

#: Steps per method: every solve makes the same number of evaluations (NFE = stages x steps).
STEPS = {"euler": 8, "midpoint": 4, "rk4": 2}
QUICK_STEPS = {"euler": 4, "midpoint": 2, "rk4": 1}
STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}


class ConvField(nn.Module):
    """A small ODENet-style block: ``conv(relu(norm(conv(relu(norm(x))))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.norm2(self.conv1(torch.relu(self.norm1(x))))))


def make_fields(quick: bool, device: str) -> dict[str, tuple[nn.Module, torch.Tensor, tuple]]:
    """name -> (field, y0, extra inputs after the state)."""
    if quick:
        dim, heads, batch, length, channels, side, images = 32, 4, 4, 8, 8, 8, 4
    else:
        dim, heads, batch, length, channels, side, images = 256, 4, 32, 32, 32, 16, 32
    layer = EncoderField(dim, heads, 4 * dim, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         activation="relu", time_dependent=False)
    conv = ConvField(channels)
    tokens = torch.randn(batch, length, dim, device=device)
    pixels = torch.randn(images, channels, side, side, device=device)
    return {
        f"transformer d={dim} h={heads} {batch}x{length}": (layer.to(device), tokens, (None,)),
        f"conv C={channels} {side}x{side} batch {images}": (conv.to(device), pixels, ()),
    }


def hand_loop(field: nn.Module, y: torch.Tensor, inputs: tuple, method: str, steps: int,
              times: list[torch.Tensor]) -> torch.Tensor:
    """The reference: the textbook update written out, one line per stage, no solver machinery."""
    h = 1.0 / steps
    for i in range(steps):
        t = times[i]
        if method == "euler":
            y = y + h * field(t[0], y, *inputs)
        elif method == "midpoint":
            k1 = field(t[0], y, *inputs)
            k2 = field(t[1], y + (h / 2) * k1, *inputs)
            y = y + h * k2
        else:  # rk4, Kutta's 3/8 rule (what torchdiffeq and node_seq call rk4)
            k1 = field(t[0], y, *inputs)
            k2 = field(t[1], y + (h / 3) * k1, *inputs)
            k3 = field(t[2], y + h * (k2 - k1 / 3), *inputs)
            k4 = field(t[3], y + h * (k1 - k2 + k3), *inputs)
            y = y + (h / 8) * (k1 + 3 * (k2 + k3) + k4)
    return y


def loop_times(method: str, steps: int, device: str) -> list[torch.Tensor]:
    c = {"euler": (0.0,), "midpoint": (0.0, 0.5), "rk4": (0.0, 1 / 3, 2 / 3, 1.0)}[method]
    return [torch.tensor([(i + cj) / steps for cj in c], device=device) for i in range(steps)]


def variants(field: nn.Module, y0: torch.Tensor, inputs: tuple, method: str, steps: int, backward: bool,
             device: str) -> dict:
    times = loop_times(method, steps, device)
    grid = torch.tensor([0.0, 1.0], device=device)

    def uniform(func, y, t):
        return torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=t.dtype)

    def rhs(t, y):
        return field(t, y, *inputs)

    runs = {
        "loop": lambda: hand_loop(field, y0, inputs, method, steps, times),
        "solve": lambda: solve(field, y0, inputs=inputs, method=method, steps=steps)[0],
        "torchdiffeq": lambda: torchdiffeq.odeint(rhs, y0, grid, method=method,
                                                  options={"grid_constructor": uniform})[-1],
    }
    params = list(field.parameters())

    def wrap(run):
        if not backward:
            def forward_only():
                with torch.no_grad():
                    run()
            return forward_only

        def forward_backward():
            for p in params:
                p.grad = None
            run().square().mean().backward()
        return forward_backward

    return {name: wrap(run) for name, run in runs.items()}


def check_same_solution(field, y0, inputs, method, steps, device) -> float:
    """The three implementations must compute the same thing, or the timing means nothing."""
    with torch.no_grad():
        runs = variants(field, y0, inputs, method, steps, False, device)
        loop = hand_loop(field, y0, inputs, method, steps, loop_times(method, steps, device))
        ours = solve(field, y0, inputs=inputs, method=method, steps=steps)[0]
        del runs
    return float((loop - ours).abs().max() / loop.abs().max().clamp_min(1e-12))


def render_table(rows: list[dict]) -> str:
    return markdown_table(
        ["field", "method", "steps (NFE)", "pass", "solve / loop", "torchdiffeq / loop", "solve / torchdiffeq",
         "loop ms", "solve overhead µs/NFE"],
        [[r["field"], r["method"], f"{r['steps']} ({r['nfe']})", r["pass"], r["solve_vs_loop"],
          r["torchdiffeq_vs_loop"], r["solve_vs_torchdiffeq"], r["loop_ms"], round(r["overhead_us_per_nfe"])]
         for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.solver_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="euler,midpoint,rk4")
    add_common_args(parser, default_out="benchmarks/results/solver_overhead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 9)
    steps_for = QUICK_STEPS if args.quick else STEPS
    rows = []
    for field_name, (field, y0, inputs) in make_fields(args.quick, args.device).items():
        for method in args.methods.split(","):
            steps = steps_for[method]
            error = check_same_solution(field, y0, inputs, method, steps, args.device)
            assert error < 1e-4, f"{method}: solve and the hand-written loop disagree ({error:.2e})"
            for backward in (False, True):
                result = interleaved_ratios(variants(field, y0, inputs, method, steps, backward, args.device),
                                            baseline="loop", repeats=repeats, device=args.device,
                                            min_seconds=0.01 if args.quick else 0.05)
                nfe = STAGES[method] * steps
                row = {
                    "field": field_name, "method": method, "steps": steps, "nfe": nfe,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "solve_vs_loop": result["solve"]["ratio"],
                    "torchdiffeq_vs_loop": result["torchdiffeq"]["ratio"],
                    "solve_vs_torchdiffeq": result["solve"]["ratio"] / result["torchdiffeq"]["ratio"],
                    "solve_vs_loop_range": [result["solve"]["ratio_min"], result["solve"]["ratio_max"]],
                    "loop_ms": 1e3 * result["loop"]["median_seconds"],
                    # From the interleaved ratio, not from two separately noisy medians.
                    "overhead_us_per_nfe": 1e6 * (result["solve"]["ratio"] - 1)
                    * result["loop"]["median_seconds"] / nfe,
                    "max_rel_diff_vs_loop": error,
                }
                rows.append(row)
                print(f"{field_name:>32} {method:>8} {row['pass']:>7}: solve/loop {row['solve_vs_loop']:.3f} "
                      f"torchdiffeq/loop {row['torchdiffeq_vs_loop']:.3f} solve/torchdiffeq "
                      f"{row['solve_vs_torchdiffeq']:.3f} (loop {row['loop_ms']:.1f} ms)", flush=True)
    meta = {"machine": machine(), "device": args.device, "repeats": repeats, "steps": steps_for, "bar": 1.05}
    table = render_table(rows)
    write_outputs(args.out, command=command_line("benchmarks.solver_overhead", argv), meta=meta, rows=rows, table=table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
