"""Memory-free gradients for fixed grids: rebuild the states backwards instead of storing them.

The forward solve runs without a graph and keeps only its final state. The backward pass walks
the grid from ``t1`` to ``t0``, reconstructs each step's input from its output, recomputes that one
step with a graph and takes its vector-Jacobian product. Memory does not grow with the number of
steps.

How exact the gradient is depends on how exactly a step can be undone:

* ``reversible_heun`` (Kidger et al., 2021) is algebraically reversible: the reconstruction is
  exact up to floating-point rounding, so gradients match backpropagation.
* ``euler`` and ``heun`` are undone by the same method stepping backwards (as in Sander et al.,
  "Do Residual Neural Networks discretize Neural ODEs?", 2022). That reconstruction is only
  approximate, with an error that shrinks as the step does; so are the gradients.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.checkpoint import checkpoint

from .fixed_grid import TABLEAUS, Tableau, combine, rk_step, stage_times
from .stats import CountingField, Stage


def _eval(field: CountingField, times, i: int, y: torch.Tensor) -> torch.Tensor:
    return field.call_at_stage(Stage(i, 0, 1, times[i][0]), y)


def _heun_reversible_step(field, times, i, h, y, z, f_z):
    """One reversible Heun step: returns ``(y_next, z_next, f(z_next))``."""
    z_next = combine(2 * y - z, h, (1.0,), (f_z,))
    f_next = _eval(field, times, i + 1, z_next)
    y_next = y + (0.5 * h) * (f_z + f_next)
    return y_next, z_next, f_next


class _ReversibleSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, field, method, t0, t1, steps, leaves, num_params, y0, *grad_tensors):
        # grad_tensors: the field's parameters, then the original inputs behind ``leaves``.
        params = grad_tensors[:num_params]
        h = (t1 - t0) / steps
        with torch.no_grad():
            if method == "reversible_heun":
                # One evaluation per grid point t_0 .. t_N (the last step reuses f(z_N)).
                times = stage_times(t0, t1 + h, steps + 1, (0.0,), y0)
                y, z = y0, y0
                f_z = _eval(field, times, 0, z)
                for i in range(steps):
                    y, z, f_z = _heun_reversible_step(field, times, i, h, y, z, f_z)
                ctx.save_for_backward(y, z, *params)
            else:
                times = stage_times(t0, t1, steps, TABLEAUS[method].c, y0)
                y = y0
                for i in range(steps):
                    y = rk_step(field, TABLEAUS[method], i, times, y, h)
                ctx.save_for_backward(y, *params)
        ctx.field, ctx.method, ctx.times, ctx.h, ctx.steps = field, method, times, h, steps
        ctx.leaves = leaves
        return y

    @staticmethod
    def backward(ctx, grad_y):
        field, times, h, steps = ctx.field, ctx.times, ctx.h, ctx.steps
        field.backward_phase = True
        if ctx.method == "reversible_heun":
            y, z, *params = ctx.saved_tensors
        else:
            y, *params = ctx.saved_tensors
        params = [*params, *ctx.leaves]  # gradients for the leaves go to the original inputs
        grads: list[torch.Tensor | None] = [None] * len(params)
        if ctx.method == "reversible_heun":
            grad_z = torch.zeros_like(z)
            with torch.no_grad():
                f_z = _eval(field, times, steps, z)
            for i in reversed(range(steps)):
                with torch.no_grad():  # exact inverse of the forward step
                    z_prev = (2 * y - z).sub_(f_z, alpha=h)
                    f_prev = _eval(field, times, i, z_prev)
                    y_prev = y - (0.5 * h) * (f_prev + f_z)
                with torch.enable_grad():
                    y_in = y_prev.detach().requires_grad_()
                    z_in = z_prev.detach().requires_grad_()
                    f_in = _eval(field, times, i, z_in)
                    y_out, z_out, _ = _heun_reversible_step(field, times, i, h, y_in, z_in, f_in)
                    step_grads = torch.autograd.grad((y_out, z_out), [y_in, z_in, *params], (grad_y, grad_z),
                                                     allow_unused=True)
                grad_y, grad_z = step_grads[0], step_grads[1]
                _accumulate(grads, step_grads[2:])
                y, z, f_z = y_prev, z_prev, f_prev
            grad_y0 = grad_y + grad_z
        else:
            tableau = TABLEAUS[ctx.method]
            for i in reversed(range(steps)):
                with torch.no_grad():  # approximate inverse: the same method, stepping backwards
                    y_prev = _backward_step(field, tableau, times, i, y, h)
                with torch.enable_grad():
                    y_in = y_prev.detach().requires_grad_()
                    y_out = rk_step(field, tableau, i, times, y_in, h)
                    step_grads = torch.autograd.grad(y_out, [y_in, *params], grad_y, allow_unused=True)
                grad_y = step_grads[0]
                _accumulate(grads, step_grads[1:])
                y = y_prev
            grad_y0 = grad_y
        return (None, None, None, None, None, None, None, grad_y0, *grads)


def _backward_step(field: CountingField, tableau: Tableau, times, i: int,
                   y_next: torch.Tensor, h: float) -> torch.Tensor:
    """Undo step ``i`` approximately: run the method from ``t_{i+1}`` back to ``t_i``."""
    t_next = times[i][0] + h
    ks: list[torch.Tensor] = []
    for j, weights in enumerate(tableau.a):
        y_stage = combine(y_next, -h, weights, ks) if j else y_next
        t_stage = t_next - tableau.c[j] * h
        ks.append(field.call_at_stage(Stage(i, j, tableau.num_stages, t_stage), y_stage))
    return combine(y_next, -h, tableau.b, ks)


def _accumulate(total: list, new: Sequence[torch.Tensor | None]) -> None:
    for k, g in enumerate(new):
        if g is not None:
            total[k] = g if total[k] is None else total[k] + g


def integrate_reversible(field: CountingField, y0: torch.Tensor, *, t0: float, t1: float, steps: int,
                         method: str, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Solve with memory-free gradients for ``y0``, ``params`` and every input that wants one."""
    originals, leaves = field.detach_inputs()
    out = _ReversibleSolve.apply(field, method, t0, t1, steps, leaves, len(params), y0, *params, *originals)
    field.stats.num_steps += steps
    field.stats.num_accepted += steps
    return out


def integrate_reversible_heun(field: CountingField, y0: torch.Tensor, *, t0, t1, steps: int,
                              use_checkpoint: bool) -> torch.Tensor:
    """Reversible Heun with an ordinary graph (the ``backprop`` and ``checkpoint`` modes)."""
    h = (t1 - t0) / steps
    times = stage_times(t0, t1 + h, steps + 1, (0.0,), y0)  # one evaluation per grid point
    y, z = y0, y0
    f_z = _eval(field, times, 0, z)
    for i in range(steps):
        if use_checkpoint and torch.is_grad_enabled():
            y, z, f_z = checkpoint(_heun_reversible_step, field, times, i, h, y, z, f_z, use_reentrant=False)
        else:
            y, z, f_z = _heun_reversible_step(field, times, i, h, y, z, f_z)
    field.stats.num_steps += steps
    field.stats.num_accepted += steps
    return y
