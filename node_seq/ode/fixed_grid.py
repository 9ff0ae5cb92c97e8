"""Fixed-grid solves with an ordinary graph: autograd through every step, or per-step checkpoints."""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .config import SolverConfig
from .schemes import Grid, State
from .stats import CountingField


def integrate(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
              norm: Callable | None = None) -> torch.Tensor:
    """Integrate ``field`` from ``t0`` to ``t1`` on the config's grid; autograd records every step.

    ``norm`` measures adaptive errors; a fixed grid has none to measure.
    """
    grid = Grid.over(config.method_spec.scheme, field, t0, t1, config.grid_steps, y0)
    return grid.march(grid.start(y0), 0, grid.steps)[0]


def integrate_checkpointed(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                           norm: Callable | None = None) -> torch.Tensor:
    """Like :func:`integrate`, but each step keeps only its input state and is recomputed in the
    backward pass (ANODE): memory holds one state per step, never a step's inner activations.

    Tensors the field closes over still get gradients: non-reentrant checkpointing records the
    graph as usual. The state's tensors are passed to ``checkpoint`` one by one, so it sees their
    device and replays that device's random numbers.
    """
    grid = Grid.over(config.method_spec.scheme, field, t0, t1, config.grid_steps, y0)

    def run(i: int, *state: torch.Tensor) -> State:
        return grid.step(i, state)

    def checkpointed(i: int, state: State) -> State:
        return checkpoint(run, i, *state, use_reentrant=False)

    return grid.march(grid.start(y0), 0, grid.steps, step=checkpointed)[0]
