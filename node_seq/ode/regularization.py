"""Regularisers that steer a neural ODE towards cheap solves ("How to train your neural ODE",
Finlay et al., 2020).

* kinetic energy: ``integral of |f(t, x)|^2 dt``; a field that moves the state slowly and straight
  is cheap for an adaptive solver;
* Jacobian norm: ``integral of |df/dx|_F^2 dt``, estimated with Hutchinson's trick as
  ``|eps^T df/dx|^2`` for one Rademacher ``eps`` per solve; a smooth field keeps steps long.

Each integral is carried as one extra channel of the state, ``de/dt = mean(integrand)`` over the
last dimension, so every solver integrates it with its own quadrature and error control, and every
gradient mode differentiates it like the rest of the state.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import SolverConfig
from .solve import solve
from .stats import SolveStats, evaluated_rows


class WithRegularizers(nn.Module):
    """``(x, e...) -> (f(t, x), integrand...)``, one channel per regulariser, in the order
    kinetic, Jacobian. ``field`` is a submodule, so the adjoint finds its parameters.

    The Hutchinson term is differentiated twice; ``twice_differentiable`` is entered around each of
    its evaluations, for a field whose operations need a setting for that (the model's attention:
    :func:`node_seq.nn.attention.twice_differentiable`). The core knows no such operation.
    """

    def __init__(self, field: nn.Module, *, kinetic: bool, jacobian_noise: torch.Tensor | None,
                 twice_differentiable: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        super().__init__()
        self.field, self.kinetic, self.jacobian_noise = field, kinetic, jacobian_noise
        self.twice_differentiable = twice_differentiable
        self.extra = int(kinetic) + int(jacobian_noise is not None)

    def forward(self, t: torch.Tensor, state: torch.Tensor, *inputs: Any) -> torch.Tensor:
        x = state[..., : state.shape[-1] - self.extra]
        if self.jacobian_noise is None:
            velocity = self.field(t, x, *inputs)
            return torch.cat([velocity, velocity.pow(2).mean(-1, keepdim=True)], dim=-1)
        differentiating = torch.is_grad_enabled()
        noise, rows = self.jacobian_noise, evaluated_rows()
        if rows is not None:  # a compacted per-row step: its rows of the solve's one noise draw
            noise = noise.index_select(0, rows)
        with torch.enable_grad(), self.twice_differentiable():
            # Without an outer graph (a forward pass under no_grad, as the adjoint's) the slice has
            # no history to differentiate through: a leaf is enough, and what comes out is detached.
            if not (differentiating and x.requires_grad):
                x = x.detach().requires_grad_()
            velocity = self.field(t, x, *inputs)
            (noise_jacobian,) = torch.autograd.grad(velocity, x, noise, create_graph=differentiating)
        channels = [velocity]
        if self.kinetic:
            channels.append(velocity.pow(2).mean(-1, keepdim=True))
        channels.append(noise_jacobian.pow(2).mean(-1, keepdim=True))
        out = torch.cat(channels, dim=-1)
        return out if differentiating else out.detach()


def solve_with_regularizers(field: nn.Module, y0: torch.Tensor, config: SolverConfig | None = None, *,
                            kinetic: bool = True, jacobian: bool = False,
                            twice_differentiable: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                            **solve_kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], SolveStats]:
    """:func:`solve` (same ``config`` and keywords), also returning the requested integrals for
    every position (``y0.shape[:-1]``).

    Returns ``(y(t1), {"kinetic": ..., "jacobian": ...}, stats)`` with the keys asked for; each
    integral is averaged over the last dimension (the model width for a Transformer layer).
    ``twice_differentiable``: see :class:`WithRegularizers`.
    """
    if not (kinetic or jacobian):
        raise ValueError("solve_with_regularizers: ask for kinetic=True, jacobian=True or both")
    noise = torch.randint(0, 2, y0.shape, device=y0.device).to(y0.dtype) * 2 - 1 if jacobian else None
    wrapped = WithRegularizers(field, kinetic=kinetic, jacobian_noise=noise, twice_differentiable=twice_differentiable)
    state, stats = solve(wrapped, F.pad(y0, (0, wrapped.extra)), config, **solve_kwargs)
    width = y0.shape[-1]
    names = [name for name, wanted in (("kinetic", kinetic), ("jacobian", jacobian)) if wanted]
    return state[..., :width], {name: state[..., width + i] for i, name in enumerate(names)}, stats

