"""Memory-free gradients for fixed grids: rebuild the states backwards instead of storing them.

The forward solve runs without a graph and keeps only its final state. The backward pass walks
the grid from ``t1`` to ``t0``, reconstructs each step's input from its output, recomputes that one
step with a graph and takes its vector-Jacobian product. Memory does not grow with the number of
steps.

How exact the gradient is depends on how exactly a step can be undone, hence two algorithms:

* :class:`_ExactReversal`: ``reversible_heun`` (Kidger et al., 2021) is algebraically reversible:
  the reconstruction is exact up to floating-point rounding, so gradients match backpropagation.
* :class:`_ReversedSteps`: ``euler`` and ``heun`` are undone by the same method stepping backwards
  (as in Sander et al., "Do Residual Neural Networks discretize Neural ODEs?", 2022). That
  reconstruction is only approximate, with an error that shrinks as the step does; so are the
  gradients.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .config import SolverConfig
from .precision import AutocastState
from .schemes import Grid, State
from .stats import CountingField


def _march_without_graph(grid: Grid, y0: torch.Tensor) -> State:
    with torch.no_grad():
        return grid.march(grid.start(y0), 0, grid.steps)


class _ReversedSteps(torch.autograd.Function):
    """Approximate reversal: each step undone by the same Runge-Kutta method stepping backwards."""

    @staticmethod
    def forward(ctx, grid, leaves, num_params, y0, *grad_tensors):
        # grad_tensors: the field's parameters, then the original inputs behind ``leaves``.
        (y,) = _march_without_graph(grid, y0)
        ctx.save_for_backward(y, *grad_tensors[:num_params])
        ctx.grid, ctx.leaves, ctx.autocast = grid, leaves, AutocastState.current(y0.device)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        grid = ctx.grid
        grid.field.backward_phase = True
        y, *params = ctx.saved_tensors
        wrt = [*params, *ctx.leaves]  # gradients for the leaves go to the original inputs
        grads: list[torch.Tensor | None] = [None] * len(wrt)
        for i in reversed(range(grid.steps)):
            with torch.no_grad(), ctx.autocast():
                (y_prev,) = grid.step_back(i, (y,))
            with torch.enable_grad(), ctx.autocast():
                y_in = y_prev.detach().requires_grad_()
                (y_out,) = grid.step(i, (y_in,))
                step_grads = torch.autograd.grad(y_out, [y_in, *wrt], grad_y, allow_unused=True)
            grad_y = step_grads[0]
            _accumulate(grads, step_grads[1:])
            y = y_prev
        return (None, None, None, grad_y, *grads)


class _ExactReversal(torch.autograd.Function):
    """Exact reversal of reversible Heun: ``(y, z)`` rebuilt from the final pair, step by step."""

    @staticmethod
    def forward(ctx, grid, leaves, num_params, y0, *grad_tensors):
        # grad_tensors: the field's parameters, then the original inputs behind ``leaves``.
        y, z, _ = _march_without_graph(grid, y0)
        ctx.save_for_backward(y, z, *grad_tensors[:num_params])
        ctx.grid, ctx.leaves, ctx.autocast = grid, leaves, AutocastState.current(y0.device)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        grid = ctx.grid
        scheme = grid.scheme
        grid.field.backward_phase = True
        y, z, *params = ctx.saved_tensors
        wrt = [*params, *ctx.leaves]  # gradients for the leaves go to the original inputs
        grads: list[torch.Tensor | None] = [None] * len(wrt)
        grad_z = torch.zeros_like(z)
        with torch.no_grad(), ctx.autocast():
            state = scheme.at_point(grid, grid.steps, y, z)
        for i in reversed(range(grid.steps)):
            with torch.no_grad(), ctx.autocast():
                state = grid.step_back(i, state)
            with torch.enable_grad(), ctx.autocast():
                y_in = state[0].detach().requires_grad_()
                z_in = state[1].detach().requires_grad_()
                y_out, z_out, _ = grid.step(i, scheme.at_point(grid, i, y_in, z_in))
                step_grads = torch.autograd.grad((y_out, z_out), [y_in, z_in, *wrt], (grad_y, grad_z),
                                                 allow_unused=True)
            grad_y, grad_z = step_grads[0], step_grads[1]
            _accumulate(grads, step_grads[2:])
        return (None, None, None, grad_y + grad_z, *grads)


def _accumulate(total: list, new: Sequence[torch.Tensor | None]) -> None:
    for k, g in enumerate(new):
        if g is not None:
            total[k] = g if total[k] is None else total[k] + g


def _reversible(function: type[torch.autograd.Function], field: CountingField, y0: torch.Tensor,
                config: SolverConfig, t0, t1) -> torch.Tensor:
    if _wants_grad(t0) or _wants_grad(t1):
        raise ValueError("gradient='reversible' does not differentiate t0/t1; use 'backprop', "
                         "'checkpoint' or 'adjoint' for time gradients")
    params = field.trainable_parameters()
    originals, leaves = field.detach_inputs()
    grid = Grid.over(config.method_spec.scheme, field, config.t0, config.t1, config.grid_steps, y0)
    return function.apply(grid, leaves, len(params), y0, *params, *originals)


def integrate_reversed_steps(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                             norm: Callable | None = None) -> torch.Tensor:
    """``euler``/``heun`` with memory-free, approximate gradients for ``y0``, the parameters and
    every input that wants one (``norm``: adaptive methods only)."""
    return _reversible(_ReversedSteps, field, y0, config, t0, t1)


def integrate_exact_reversal(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                             norm: Callable | None = None) -> torch.Tensor:
    """``reversible_heun`` with memory-free, exact gradients for ``y0``, the parameters and every
    input that wants one (``norm``: adaptive methods only)."""
    return _reversible(_ExactReversal, field, y0, config, t0, t1)


def _wants_grad(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad
