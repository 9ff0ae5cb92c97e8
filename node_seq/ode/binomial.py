"""Checkpointing with a fixed number of stored states: memory that does not grow with the steps.

Per-step checkpointing (ANODE) keeps one state per step. With a budget of ``snapshots`` states the
backward pass instead follows the binomial schedule of Griewank's *revolve* (Griewank & Walther,
2000; used for neural ODEs by PNODE, Zhang & Zhao 2022): to reverse ``n`` steps with ``s`` free
snapshots, advance (without a graph) to a split point, store the state there, reverse the right
part with ``s - 1`` snapshots, then the left part with ``s``. With ``t`` the smallest integer such
that ``C(s + t, s) >= n``, every step is evaluated at most ``t + 1`` times, and memory holds
``snapshots + 1`` states plus one step's graph, whatever ``n`` is. The snapshots the first descent
needs are stored by the forward solve, so that descent costs nothing extra.

Each step is recomputed with the random-number state and autocast settings it first ran with, so
dropout inside the field gives the gradient of the forward pass that was actually taken. Those
generator states are the only per-step record (about 5 KiB each on the CPU, 16 bytes on a GPU).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch

from .config import SolverConfig
from .precision import AutocastState
from .reversible import _accumulate
from .schemes import Grid, State
from .stats import CountingField


def split_point(n: int, snapshots: int) -> int:
    """Steps the left part keeps when ``n >= 2`` steps are reversed with ``snapshots >= 1`` free states."""
    repetitions = 1
    while math.comb(snapshots + repetitions, snapshots) < n:
        repetitions += 1
    right_max = math.comb(snapshots - 1 + repetitions, snapshots - 1)
    return max(1, n - right_max)


def first_descent(steps: int, snapshots: int) -> list[int]:
    """The grid indices whose states the reversal stores first (the forward solve stores them)."""
    start, free, points = 0, snapshots, []
    while steps - start > 1 and free > 0:
        start += split_point(steps - start, free)
        points.append(start)
        free -= 1
    return points


class _RandomState:
    """The generator states one step started from, so its recomputation draws the same numbers."""

    def __init__(self, device: torch.device):
        self.cuda_device = None
        if device.type == "cuda":
            self.cuda_device = device.index if device.index is not None else torch.cuda.current_device()
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.cuda_device) if self.cuda_device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.cuda_device)


class _Reversal:
    """The backward walk: stores, recomputes and differentiates steps following the binomial schedule."""

    def __init__(self, ctx, wrt: Sequence[torch.Tensor], time_leaves: Sequence[torch.Tensor]):
        self.ctx, self.wrt, self.time_leaves = ctx, list(wrt), list(time_leaves)
        self.grads: list[torch.Tensor | None] = [None] * (len(self.wrt) + len(self.time_leaves))
        if time_leaves:  # stage times and step size as functions of t0, t1, so their gradients flow back
            t0, t1 = time_leaves
            with torch.enable_grad():
                self.grid = Grid.over(ctx.grid.scheme, ctx.grid.field, t0, t1, ctx.steps, t0)
        else:
            self.grid = ctx.grid

    def _replay(self, grid: Grid, i: int, state: State) -> State:
        """Step ``i`` with the random numbers and autocast settings it first ran with."""
        self.ctx.rng[i].restore()
        with self.ctx.autocast():
            return grid.step(i, state)

    def advance(self, start: int, stop: int, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.ctx.grid.march((y,), start, stop, step=functools.partial(self._replay, self.ctx.grid))[0]

    def differentiate(self, i: int, y: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y_in = y.detach().requires_grad_()
            (y_out,) = self._replay(self.grid, i, (y_in,))
            grads = torch.autograd.grad(y_out, [y_in, *self.wrt, *self.time_leaves], grad_out,
                                        allow_unused=True, retain_graph=bool(self.time_leaves))
        _accumulate(self.grads, grads[1:])
        return grads[0] if grads[0] is not None else torch.zeros_like(y)

    def reverse(self, y0: torch.Tensor, snapshots: int, grad: torch.Tensor) -> torch.Tensor:
        """The gradient at ``y0`` from the gradient at the last state, storing at most ``snapshots`` states.

        A loop over a stack of segments still to reverse (start, stop, state at start, free
        snapshots), not a recursion: a thousand steps with one snapshot is a thousand segments.
        """
        pending = [(0, self.ctx.steps, y0, snapshots)]
        while pending:
            start, stop, y_start, free = pending.pop()
            while stop - start > 1 and free > 0:  # store a state, reverse the right part first
                middle = start + split_point(stop - start, free)
                stored = self.ctx.snapshots.pop(middle, None)
                y_middle = stored if stored is not None else self.advance(start, middle, y_start)
                pending.append((start, middle, y_start, free))
                start, y_start, free = middle, y_middle, free - 1
                del stored, y_middle
            for i in reversed(range(start, stop)):  # one step, or nothing stored: replay from ``start``
                grad = self.differentiate(i, self.advance(start, i, y_start), grad)
            del y_start
        return grad


class _BinomialCheckpointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, field, scheme, steps, snapshots, leaves, num_params, y0, t0, t1, *grad_tensors):
        # grad_tensors: the field's parameters, then the original inputs behind ``leaves``.
        ctx.steps, ctx.snapshots_budget = steps, snapshots
        ctx.leaves = leaves
        t0_value, t1_value = float(t0), float(t1)
        ctx.grid = grid = Grid.over(scheme, field, t0_value, t1_value, steps, y0)
        ctx.autocast = AutocastState.current(y0.device)
        keep = set(first_descent(steps, snapshots))
        ctx.rng, ctx.snapshots = [], {}

        def recorded(i: int, state: State) -> State:  # the first descent's snapshots and every step's RNG
            if i in keep:
                ctx.snapshots[i] = state[0]
            ctx.rng.append(_RandomState(y0.device))
            return grid.step(i, state)

        (y,) = grid.march(grid.start(y0), 0, steps, step=recorded)
        ctx.save_for_backward(y0, *grad_tensors[:num_params])
        ctx.time_wants_grad = list(ctx.needs_input_grad[7:9])
        ctx.t_values = (t0_value, t1_value)
        ctx.reversed = False
        return y

    @staticmethod
    def backward(ctx, grad_y):
        if ctx.reversed:
            raise RuntimeError("gradient 'checkpoint' with snapshots frees its stored states while it runs "
                               "backwards: backward through it only once (retain_graph is not supported)")
        ctx.reversed = True
        ctx.grid.field.backward_phase = True
        y0, *params = ctx.saved_tensors
        time_leaves = []
        if any(ctx.time_wants_grad):
            time_leaves = [torch.tensor(v, dtype=y0.dtype, device=y0.device, requires_grad=True) for v in ctx.t_values]
        cuda_device = ctx.rng[0].cuda_device
        with torch.random.fork_rng(devices=[] if cuda_device is None else [cuda_device]):
            reversal = _Reversal(ctx, [*params, *ctx.leaves], time_leaves)
            grad_y0 = reversal.reverse(y0, ctx.snapshots_budget, grad_y)
        num_wrt = len(params) + len(ctx.leaves)
        time_grads = reversal.grads[num_wrt:] if time_leaves else [None, None]
        t0_grad, t1_grad = (g if wants else None for g, wants in zip(time_grads, ctx.time_wants_grad))
        return (None, None, None, None, None, None, grad_y0, t0_grad, t1_grad, *reversal.grads[:num_wrt])


def integrate_binomial(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                       norm: Callable | None = None) -> torch.Tensor:
    """Solve on a fixed grid; the backward pass stores at most ``config.checkpoint_snapshots``
    states besides ``y0`` (``norm``: adaptive methods only)."""
    params = field.trainable_parameters()
    originals, leaves = field.detach_inputs()
    t0, t1 = (t if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=y0.dtype, device=y0.device)
              for t in (t0, t1))
    return _BinomialCheckpointSolve.apply(field, config.method_spec.scheme, config.grid_steps, config.checkpoint_snapshots,
                                          leaves, len(params), y0, t0, t1, *params, *originals)
