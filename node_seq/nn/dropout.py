"""Dropout that holds still during a solve.

An adaptive solver compares evaluations of the vector field to pick its step; if every evaluation
drew a fresh dropout mask it would be chasing noise, and the adjoint's backward solve would
integrate a different field from the forward one. ``FrozenDropout`` draws its mask at the first
evaluation of a solve and reuses it until the owning layer calls :meth:`reset` before the next
solve, so the forward solve, checkpoint recomputation and the adjoint all see one fixed field.
The first evaluation sees the whole batch; a per-row solve that later evaluates only the rows
still stepping (:func:`~node_seq.ode.evaluated_rows`) gets those rows of the same mask.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ode import evaluated_rows


class FrozenDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._mask: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the mask: the next evaluation draws a new one."""
        self._mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        rows = evaluated_rows()
        if rows is not None and self._mask is not None:  # a compacted step: its rows of the solve's mask
            return x * self._mask.index_select(0, rows)
        if self._mask is None or self._mask.shape != x.shape or self._mask.device != x.device:
            self._mask = torch.empty_like(x).bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        return x * self._mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def reset_frozen_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, FrozenDropout):
            m.reset()
