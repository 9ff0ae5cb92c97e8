"""``solve``: the one entry point every node-seq model integrates its ODE blocks through."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .adaptive import integrate_torchdiffeq
from .binomial import integrate_binomial
from .config import DEFAULT_MAX_NUM_STEPS, SolverConfig, steps_for_step_size
from .errors import MaxStepsExceeded, NonFiniteState, StepSizeUnderflow
from .fixed_grid import integrate
from .reversible import integrate_reversible, integrate_reversible_heun
from .stats import CountingField, SolveStats


def solve(
    func: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    *,
    inputs: Sequence[Any] = (),
    t0: float | torch.Tensor = 0.0,
    t1: float | torch.Tensor = 1.0,
    method: str = "rk4",
    steps: int | None = None,
    step_size: float | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    gradient: str = "backprop",
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    seminorm: bool = False,
    checkpoint_snapshots: int | None = None,
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS,
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
    check_finite: bool = True,
) -> tuple[torch.Tensor, SolveStats]:
    """Integrate ``dy/dt = func(t, y, *inputs)`` from ``t0`` to ``t1``; return ``(y(t1), stats)``.

    Args:
        func: the vector field, usually an ``nn.Module``. It receives ``t`` as a 0-d tensor.
        y0: the initial state.
        inputs: extra arguments passed to ``func`` after ``y`` (encoder output, padding mask, ...).
            Every floating tensor among them that requires grad receives a gradient in every
            gradient mode; non-tensors pass through untouched.
        t0, t1: the interval. Tensors that require grad receive gradients ("backprop",
            "checkpoint", "adjoint").
        method: fixed grid ``euler``, ``midpoint``, ``heun``, ``rk4`` (Kutta's 3/8 rule),
            ``reversible_heun``; adaptive ``dopri5``, ``bosh3``, ``adaptive_heun``, ``dopri8``,
            ``fehlberg2`` (through torchdiffeq).
        steps, step_size: the grid of a fixed-grid method (default one step). A ``step_size``
            that does not divide the interval is rounded down so the grid stays uniform.
        rtol, atol: tolerances of adaptive methods.
        gradient: ``backprop`` (autograd through every step), ``checkpoint`` (recompute steps in
            the backward pass; fixed grids), ``adjoint`` (continuous adjoint through
            torchdiffeq), ``reversible`` (memory-free: rebuild states backwards; fixed grids; exact
            for ``reversible_heun``, approximate for ``euler``/``heun``).
        adjoint_rtol, adjoint_atol: tolerances of the adjoint's backward solve (default: forward).
        seminorm: measure the adjoint's error without the parameter-gradient channels
            (Kidger et al., 2021): fewer backward steps, same gradients to tolerance.
        checkpoint_snapshots: with ``gradient="checkpoint"``, the number of states stored besides
            ``y0`` (binomial schedule: memory independent of the steps, each step recomputed a few
            times). Unset: one stored state per step, each step recomputed once.
        max_num_steps: adaptive steps (accepted + rejected) allowed before
            :class:`~node_seq.ode.MaxStepsExceeded` is raised; no solve can run forever.
        norm: error norm of adaptive methods (e.g. one that ignores padding).
        check_finite: raise :class:`~node_seq.ode.NonFiniteState` if ``y(t1)`` holds inf/nan
            (one host synchronisation per solve, none per step).

    Returns:
        ``(y1, stats)``: the state at ``t1`` and a :class:`~node_seq.ode.SolveStats`, whose
        ``nfe_backward`` is filled in by the backward pass.

    Raises:
        node_seq.ode.OptionError: an invalid option, before any evaluation.
        node_seq.ode.ODESolveError: the solve could not finish (subclasses say why).
    """
    t0_value, t1_value = _as_float(t0), _as_float(t1)
    if step_size is not None and steps is None and math.isfinite(t1_value - t0_value) and step_size > 0:
        steps = steps_for_step_size(t0_value, t1_value, step_size)
        step_size = None
    config = SolverConfig(
        method=method, steps=steps, step_size=step_size, rtol=rtol, atol=atol, gradient=gradient,
        adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, seminorm=seminorm,
        checkpoint_snapshots=checkpoint_snapshots, max_num_steps=max_num_steps, t0=t0_value, t1=t1_value,
    ).validate()
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got {type(y0).__name__}")

    stats = SolveStats(method=method)
    inputs = tuple(inputs)

    def limit_error(phase: str) -> Exception:
        cls = StepSizeUnderflow if phase == "underflow" else MaxStepsExceeded
        detail = "" if phase == "underflow" else f"max_num_steps={max_num_steps} in the {phase} solve"
        return cls(method=method, rtol=rtol, atol=atol, t_reached=stats.t_reached if stats.t_reached is not None
                   else t0_value, t1=t1_value, nfe=stats.nfe_forward + stats.nfe_backward, detail=detail)

    field = CountingField(func, inputs, stats, max_num_steps=max_num_steps, on_limit=limit_error)
    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or any(_wants_grad(x) for x in inputs) or _wants_grad(t0) or _wants_grad(t1)
        or any(p.requires_grad for p in _parameters(func))
    )
    # Without a graph to build, every gradient mode is the same plain forward solve.
    mode = gradient if needs_grad else "backprop"
    fixed = config.is_fixed_grid
    grid_steps = config.steps or 1

    if mode == "reversible":
        if _wants_grad(t0) or _wants_grad(t1):
            raise ValueError("gradient='reversible' does not differentiate t0/t1; use 'backprop', "
                             "'checkpoint' or 'adjoint' for time gradients")
        y1 = integrate_reversible(field, y0, t0=t0_value, t1=t1_value, steps=grid_steps, method=method,
                                  params=_trainable(func))
    elif mode == "checkpoint" and checkpoint_snapshots is not None:
        y1 = integrate_binomial(field, y0, t0=t0, t1=t1, steps=grid_steps, method=method,
                                snapshots=checkpoint_snapshots, params=_trainable(func))
    elif fixed and mode in ("backprop", "checkpoint") and method != "reversible_heun":
        y1 = integrate(field, y0, t0=t0, t1=t1, steps=grid_steps, method=method,
                       use_checkpoint=mode == "checkpoint")
    elif method == "reversible_heun":
        y1 = integrate_reversible_heun(field, y0, t0=t0, t1=t1, steps=grid_steps, use_checkpoint=mode == "checkpoint")
    else:
        y1 = integrate_torchdiffeq(
            field, y0, t0=t0, t1=t1, method=method, steps=grid_steps if fixed else None,
            rtol=rtol, atol=atol, adjoint=mode == "adjoint", adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol, seminorm=seminorm, max_num_steps=max_num_steps,
            params=_trainable(func) if mode == "adjoint" else (),
            norm=norm,
        )
    stats.t_reached = t1_value
    field.backward_phase = True  # any later evaluation comes from autograd
    if check_finite and not _all_finite(y1):
        raise NonFiniteState(method=method, rtol=None if fixed else rtol, atol=None if fixed else atol,
                             t_reached=None, t1=t1_value, nfe=stats.nfe_forward,
                             detail="the state at t1 holds inf or nan")
    return y1, stats


def _all_finite(y: torch.Tensor) -> bool:
    """Whether ``y`` holds no inf/nan. One sum decides the usual case (a third of the cost of
    ``isfinite().all()`` on small states); only a non-finite sum, which an overflow of finite
    values could also give, is checked element by element."""
    total = y.sum(dtype=torch.float64 if y.dtype == torch.float64 else torch.float32).item()
    return math.isfinite(total) or bool(torch.isfinite(y).all())


def _as_float(t: float | torch.Tensor) -> float:
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def _wants_grad(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad


def _parameters(func: Any) -> list[torch.Tensor]:
    return list(func.parameters()) if isinstance(func, nn.Module) else []


def _trainable(func: Any) -> tuple[torch.Tensor, ...]:
    return tuple(p for p in _parameters(func) if p.requires_grad)
