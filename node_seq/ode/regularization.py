"""Kinetic-energy regularisation ("How to train your neural ODE", Finlay et al., 2020).

A field that moves the state slowly and straight is cheap for an adaptive solver. Penalising
``integral of |f(t, x)|^2 dt`` during training steers towards such fields, and so towards lower NFE.
The integral is carried as one extra channel of the state, ``de/dt = mean(f^2)`` over the last
dimension, so every solver integrates it with its own quadrature and error control, and every
gradient mode (the adjoint included) differentiates it like the rest of the state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .solve import solve
from .stats import SolveStats


class WithKineticEnergy(nn.Module):
    """``(x, e) -> (f(t, x), mean(f(t, x)^2))`` over the last dimension; ``field`` is a submodule,
    so its parameters are found by the adjoint."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field

    def forward(self, t: torch.Tensor, state: torch.Tensor, *inputs: Any) -> torch.Tensor:
        velocity = self.field(t, state[..., :-1], *inputs)
        return torch.cat([velocity, velocity.pow(2).mean(-1, keepdim=True)], dim=-1)


def solve_with_kinetic_energy(field: nn.Module, y0: torch.Tensor, **solve_kwargs: Any
                              ) -> tuple[torch.Tensor, torch.Tensor, SolveStats]:
    """:func:`solve`, also returning the kinetic energy of every position (``y0.shape[:-1]``).

    The energy is the integral over the interval of the squared velocity averaged over the last
    dimension (the model width for a Transformer layer).
    """
    state, stats = solve(WithKineticEnergy(field), F.pad(y0, (0, 1)), **solve_kwargs)
    return state[..., :-1], state[..., -1], stats
