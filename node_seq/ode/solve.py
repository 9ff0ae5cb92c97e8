"""``solve``: the one entry point every node-seq model integrates its ODE blocks through."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .adaptive import integrate_adaptive, integrate_adjoint
from .binomial import integrate_binomial
from .config import SolverConfig
from .errors import MaxStepsExceeded, NonFiniteState, StepSizeUnderflow
from .fixed_grid import integrate, integrate_checkpointed
from .methods import SNAPSHOTS
from .reversible import integrate_exact_reversal, integrate_reversed_steps
from .stats import CountingField, SolveStats

#: ``(field, y0, config, t0, t1, norm) -> y(t1)``; ``norm`` is read by adaptive methods only.
Integrator = Callable[..., torch.Tensor]

#: Which integrator runs a solve, by gradient mode and kind of method. Every pair a validated
#: :class:`SolverConfig` can ask for is here; the others are refused by its validation.
INTEGRATORS: dict[tuple[str, str], Integrator] = {
    ("backprop", "runge_kutta"): integrate,
    ("backprop", "invertible"): integrate,
    ("backprop", "adaptive"): integrate_adaptive,
    ("checkpoint", "runge_kutta"): integrate_checkpointed,
    ("checkpoint", "invertible"): integrate_checkpointed,
    (SNAPSHOTS, "runge_kutta"): integrate_binomial,
    ("adjoint", "runge_kutta"): integrate_adjoint,
    ("adjoint", "adaptive"): integrate_adjoint,
    ("reversible", "runge_kutta"): integrate_reversed_steps,
    ("reversible", "invertible"): integrate_exact_reversal,
    ("backprop", "learned"): integrate,
    ("checkpoint", "learned"): integrate_checkpointed,
    (SNAPSHOTS, "learned"): integrate_binomial,
}


def solve(
    func: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    config: SolverConfig | None = None,
    *,
    inputs: Sequence[Any] = (),
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None,
    coefficients: nn.Module | None = None,
    t0: float | torch.Tensor | None = None,
    t1: float | torch.Tensor | None = None,
    check_finite: bool = True,
    **options: Any,
) -> tuple[torch.Tensor, SolveStats]:
    """Integrate ``dy/dt = func(t, y, *inputs)`` from ``t0`` to ``t1``; return ``(y(t1), stats)``.

    Two spellings, one path: ``solve(func, y0, config)`` with a :class:`SolverConfig` (what the
    models do: the config is validated on its first solve only), or
    ``solve(func, y0, method="rk4", steps=4, ...)`` with the config's fields as keywords (a
    config is built from them on each call).

    Args:
        func: the vector field, usually an ``nn.Module``. It receives ``t`` as a 0-d tensor.
        y0: the initial state.
        config: how to integrate; see :class:`SolverConfig` for the methods, gradient modes
            (``backprop``, ``checkpoint``, ``adjoint``, ``reversible``) and tolerances.
        inputs: extra arguments passed to ``func`` after ``y`` (encoder output, padding mask, ...).
            Every floating tensor among them that requires grad receives a gradient in every
            gradient mode; non-tensors pass through untouched.
        norm: error norm of adaptive methods (e.g. one that ignores padding).
        coefficients: the learned coefficients of a learned block (``rk2_gated``: an object with
            ``gate(k1, k2)``; ``pc``: ``alpha``, ``beta`` and ``normalize(stage, k)``; see
            :mod:`~node_seq.ode.schemes`), required by those methods and refused by the others.
            The layer owns them; an ``nn.Module``'s parameters get gradients in every gradient mode.
        t0, t1: the interval (default: the config's). Tensors that require grad receive
            gradients ("backprop", "checkpoint", "adjoint"). With a ``config`` they must equal
            its ``t0``/``t1``: they only carry the graph.
        check_finite: raise :class:`~node_seq.ode.NonFiniteState` if ``y(t1)`` holds inf/nan
            (one host synchronisation per solve, none per step). Inside ``torch.compile`` nothing
            is raised: ``stats.finite`` holds the answer as a tensor, for the caller to check once
            per step (:func:`node_seq.nn.layers.check_finite`).
        options: without a ``config``, its fields (``method``, ``steps``, ``step_size``,
            ``rtol``, ``atol``, ``gradient``, ``adjoint_rtol``, ``adjoint_atol``, ``seminorm``,
            ``checkpoint_snapshots``, ``max_num_steps``).

    Returns:
        ``(y1, stats)``: the state at ``t1`` and a :class:`~node_seq.ode.SolveStats`, whose
        ``nfe_backward`` is filled in by the backward pass.

    Raises:
        node_seq.ode.OptionError: an invalid option, before any evaluation.
        node_seq.ode.ODESolveError: the solve could not finish (subclasses say why).
    """
    if config is None:
        interval = {name: _as_float(t) for name, t in (("t0", t0), ("t1", t1)) if t is not None}
        config = SolverConfig(**options, **interval)
    elif options:
        raise TypeError(f"solve: give a SolverConfig or its fields as keywords, not both (got {', '.join(options)})")
    else:
        _check_interval(config, t0, t1)
    config.ensure_valid()
    if config.is_learned and coefficients is None:
        raise TypeError(f"solve: method {config.method!r} is a learned block: pass its learned coefficients as "
                        "coefficients= (NodeEncoderLayer and NodeDecoderLayer build and pass them)")
    if coefficients is not None and not config.is_learned:
        raise TypeError(f"solve: coefficients= apply to the learned blocks only, not to method {config.method!r}")
    if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got {type(y0).__name__}")
    # Tensor end points keep their graph (time gradients); numbers come from the config.
    t0 = t0 if isinstance(t0, torch.Tensor) else config.t0
    t1 = t1 if isinstance(t1, torch.Tensor) else config.t1

    stats = SolveStats(method=config.method)
    inputs = tuple(inputs)

    def limit_error(phase: str) -> Exception:
        cls = StepSizeUnderflow if phase == "underflow" else MaxStepsExceeded
        detail = "" if phase == "underflow" else f"max_num_steps={config.max_num_steps} in the {phase} solve"
        return cls(method=config.method, rtol=config.rtol, atol=config.atol,
                   t_reached=stats.t_reached if stats.t_reached is not None else config.t0, t1=config.t1,
                   nfe=stats.nfe_forward + stats.nfe_backward, detail=detail)

    field = CountingField(func, inputs, stats, max_num_steps=config.max_num_steps, on_limit=limit_error,
                          coefficients=coefficients)
    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or any(_wants_grad(x) for x in inputs) or _wants_grad(t0) or _wants_grad(t1)
        or bool(field.trainable_parameters())
    )
    mode = _gradient_mode(config, needs_grad)
    y1 = INTEGRATORS[mode, _step_kind(config)](field, y0, config, t0, t1, norm)
    if config.is_fixed_grid:
        field.count_grid_steps(config.grid_steps)
        if mode == "checkpoint" and torch.compiler.is_compiling():
            # the compiled backward recomputes every step once, where no Python sees it: count it now
            stats.nfe_backward = stats.nfe_forward
    stats.t_reached = config.t1
    field.backward_phase = True  # any later evaluation comes from autograd
    if check_finite:
        if torch.compiler.is_compiling():  # no host synchronisation in a graph: the caller checks later
            stats.finite = torch.isfinite(y1).all()
        elif not _all_finite(y1):
            raise non_finite_error(config, stats)
    return y1, stats


def non_finite_error(config: SolverConfig, stats: SolveStats) -> NonFiniteState:
    """The error of a solve whose state at ``t1`` holds inf or nan (raised at once, or later from
    ``stats.finite`` when the solve was compiled)."""
    fixed = config.is_fixed_grid
    return NonFiniteState(method=config.method, rtol=None if fixed else config.rtol,
                          atol=None if fixed else config.atol, t_reached=None, t1=config.t1,
                          nfe=stats.nfe_forward, detail="the state at t1 holds inf or nan")


def _gradient_mode(config: SolverConfig, needs_grad: bool) -> str:
    if not needs_grad:
        return "backprop"  # without a graph to build, every gradient mode is the same plain forward solve
    if config.gradient == "checkpoint" and config.checkpoint_snapshots is not None:
        return SNAPSHOTS
    return config.gradient


def _step_kind(config: SolverConfig) -> str:
    """What steps the method: its fixed-grid scheme's kind, or an adaptive loop."""
    scheme = config.method_spec.scheme
    return scheme.kind if scheme is not None else "adaptive"


def _check_interval(config: SolverConfig, t0, t1) -> None:
    """End points given with a config may only restate its interval, so what was validated is solved."""
    for name, t in (("t0", t0), ("t1", t1)):
        if t is not None and _as_float(t) != getattr(config, name):
            raise ValueError(f"solve: {name}={_as_float(t)!r} differs from the config's {name}={getattr(config, name)!r}; "
                             f"pass a config with that interval (dataclasses.replace(config, {name}=...))")


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
