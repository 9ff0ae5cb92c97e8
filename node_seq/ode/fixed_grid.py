"""Explicit Runge-Kutta methods on a uniform grid, with or without per-step checkpointing.

The loop is kept lean because it sits under every NODE layer: stage times are computed once per
solve as one tensor (no host synchronisation per step), the state is never concatenated, and each
stage combination is a single fused ``add``/``add_`` chain over the stages it needs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from .stats import CountingField, Stage


class Tableau(NamedTuple):
    """Butcher tableau of an explicit method: stage times ``c``, stage weights ``a``, output ``b``."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]

    @property
    def num_stages(self) -> int:
        return len(self.c)


TABLEAUS = {
    "euler": Tableau(c=(0.0,), a=((),), b=(1.0,)),
    "midpoint": Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0)),
    "heun": Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5)),
    # Kutta's 3/8 rule: the fourth-order method torchdiffeq calls "rk4", so the adjoint route
    # (which integrates with torchdiffeq) and our own loop compute the same solution.
    "rk4": Tableau(
        c=(0.0, 1 / 3, 2 / 3, 1.0),
        a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    ),
}


def combine(y: torch.Tensor, h: float | torch.Tensor, weights: Sequence[float], ks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``y + h * sum_i weights[i] * ks[i]``, skipping zero weights, without needless temporaries."""
    out = y
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        if isinstance(h, torch.Tensor):
            out = torch.addcmul(out, h * w, k)
        elif out is y:
            out = torch.add(y, k, alpha=h * w)
        else:
            out.add_(k, alpha=h * w)  # ``out`` is our own temporary: safe to accumulate in place
    return out


def stage_times(t0, t1, steps: int, c: Sequence[float], like: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
    """All stage times of the solve, ``times[step][stage]``, built as one tensor in one go.

    Returned as nested tuples of 0-d views: indexing a tuple costs nothing, indexing a tensor
    costs a few microseconds per stage, which shows on small fields. Plain-number intervals (the
    usual case) are cached per grid, dtype and device, so repeated solves skip building them.
    """
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    if isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor):
        return _as_tuples(_stage_time_tensor(t0, t1, steps, c, dtype, like.device))
    return _cached_stage_times(float(t0), float(t1), steps, tuple(c), dtype, like.device)


@functools.lru_cache(maxsize=256)
def _cached_stage_times(t0: float, t1: float, steps: int, c: tuple[float, ...], dtype: torch.dtype,
                        device: torch.device) -> tuple[tuple[torch.Tensor, ...], ...]:
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, whichever mode asks first
        return _as_tuples(_stage_time_tensor(t0, t1, steps, c, dtype, device))


def _as_tuples(times: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
    return tuple(row.unbind(0) for row in times.unbind(0))


def _stage_time_tensor(t0, t1, steps: int, c: Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor):
        t0 = torch.as_tensor(t0, dtype=dtype, device=device)
        t1 = torch.as_tensor(t1, dtype=dtype, device=device)
        frac = (torch.arange(steps, dtype=dtype, device=device)[:, None]
                + torch.tensor(c, dtype=dtype, device=device)[None, :]) / steps
        return t0 + (t1 - t0) * frac
    h = (t1 - t0) / steps
    grid = [[t0 + (i + cj) * h for cj in c] for i in range(steps)]
    return torch.tensor(grid, dtype=dtype, device=device)


def rk_step(field: CountingField, tableau: Tableau, step: int, times: Sequence[Sequence[torch.Tensor]],
            y: torch.Tensor, h: float | torch.Tensor) -> torch.Tensor:
    """One explicit RK step from ``y``; the vector field sees each stage's index and time."""
    ks: list[torch.Tensor] = []
    for j, weights in enumerate(tableau.a):
        y_stage = combine(y, h, weights, ks) if j else y
        ks.append(field.call_at_stage(Stage(step, j, tableau.num_stages, times[step][j]), y_stage))
    return combine(y, h, tableau.b, ks)


def integrate(field: CountingField, y0: torch.Tensor, *, t0, t1, steps: int, method: str,
              use_checkpoint: bool) -> torch.Tensor:
    """Integrate ``field`` from ``t0`` to ``t1`` in ``steps`` uniform steps of ``method``.

    With ``use_checkpoint`` each step keeps only its input state and is recomputed in the backward
    pass (ANODE): memory holds one state per step, never a step's inner activations. Tensors the
    field closes over still get gradients: non-reentrant checkpointing records the graph as usual.
    """
    tableau = TABLEAUS[method]
    times = stage_times(t0, t1, steps, tableau.c, y0)
    h = (t1 - t0) / steps
    y = y0
    for i in range(steps):
        if use_checkpoint and torch.is_grad_enabled():
            y = checkpoint(rk_step, field, tableau, i, times, y, h, use_reentrant=False)
        else:
            y = rk_step(field, tableau, i, times, y, h)
    field.stats.num_steps += steps
    field.stats.num_accepted += steps
    return y

