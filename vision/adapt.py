"""Step (or tolerance) adaptation during training, after "ResNet After All?" (Ott et al., ICLR'21).

A model trained with too coarse a solver learns a map that only works at that discretization.
Every ``interval`` iterations we compare the accuracy under the training solver with the accuracy
under a reference solver whose error is about ``error_ratio`` times smaller. If they disagree by
more than ``threshold`` the step is too coarse and the number of steps doubles (up to
``max_steps``); otherwise a larger step (``growth`` times fewer steps) is tried and kept only if it
still agrees with the reference. Adaptive solvers adapt their tolerances the same way.

Unlike the original, steps stay whole numbers (the grid is always uniform), the reference for an
adaptive solver is tightened against the NFE measured now, and accuracy comes from a fixed
adaptation set rather than the current mini-batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from node_seq.ode import REGISTRY, SolverConfig

#: The method that checks each training method.
REFERENCE_METHODS = {"euler": "midpoint", "midpoint": "rk4", "heun": "rk4", "reversible_heun": "rk4", "rk4": "rk4"}

#: ``accuracy(solver) -> (accuracy in [0, 1], forward NFE of that evaluation)``
AccuracyFn = Callable[[SolverConfig], "tuple[float, int]"]


def reference_solver(train: SolverConfig, *, error_ratio: float = 50.0) -> SolverConfig:
    """A solver whose global error is about ``error_ratio`` times smaller than ``train``'s.

    With a step ``h`` of order ``p``, the reference of order ``q`` takes ``h_ref`` with
    ``h_ref**q = h**p / error_ratio``, and never fewer steps than ``train``.
    """
    if train.is_fixed_grid:
        steps = train.steps or 1
        p, method = train.method_spec.order, REFERENCE_METHODS[train.method]
        q = REGISTRY[method].order
        h_ref = ((1.0 / steps) ** p / error_ratio) ** (1.0 / q)
        ref_steps = max(steps, math.ceil(1.0 / h_ref - 1e-9))
        return dataclasses.replace(train, method=method, steps=ref_steps, step_size=None, gradient="backprop",
                                   checkpoint_snapshots=None)
    return dataclasses.replace(train, method="dopri5", rtol=train.rtol / 10, atol=train.atol / 10,
                               gradient="backprop", checkpoint_snapshots=None)


def coarser(solver: SolverConfig, growth: float) -> SolverConfig | None:
    """The next larger step (or looser tolerance) to try; ``None`` if the grid has one step already."""
    if solver.is_fixed_grid:
        steps = solver.steps or 1
        if steps == 1:
            return None
        return dataclasses.replace(solver, steps=max(1, min(steps - 1, round(steps / growth))))
    return dataclasses.replace(solver, rtol=solver.rtol * growth, atol=solver.atol * growth)


def finer(solver: SolverConfig, max_steps: int) -> SolverConfig | None:
    """Half the step (double the steps, at most ``max_steps``) or half the tolerance."""
    if solver.is_fixed_grid:
        steps = solver.steps or 1
        if steps >= max_steps:
            return None
        new = 2 * steps if 2 * steps <= max_steps else (steps + max_steps + 1) // 2
        return dataclasses.replace(solver, steps=new)
    return dataclasses.replace(solver, rtol=solver.rtol / 2, atol=solver.atol / 2)


def describe(solver: SolverConfig) -> str:
    if solver.is_fixed_grid:
        return f"{solver.method} steps={solver.steps or 1}"
    return f"{solver.method} rtol={solver.rtol:.3g} atol={solver.atol:.3g}"


@dataclasses.dataclass
class StepAdapter:
    threshold: float = 0.1
    max_steps: int = 500
    growth: float = 1.1
    error_ratio: float = 50.0
    max_reference_tightenings: int = 3

    def update(self, solver: SolverConfig, accuracy: AccuracyFn) -> tuple[SolverConfig, dict | None]:
        """One adaptation check; returns the solver to train with and, if it changed, a log record."""
        acc_train, nfe_train = accuracy(solver)
        reference = reference_solver(solver, error_ratio=self.error_ratio)
        acc_ref, nfe_ref = accuracy(reference)
        if not solver.is_fixed_grid:
            # the reference must do more work than the training solver to be a reference at all
            for _ in range(self.max_reference_tightenings):
                if nfe_ref > nfe_train:
                    break
                reference = dataclasses.replace(reference, rtol=reference.rtol / 10, atol=reference.atol / 10)
                acc_ref, nfe_ref = accuracy(reference)
        record = {"old": describe(solver), "acc_train_solver": acc_train, "acc_reference": acc_ref,
                  "reference": describe(reference)}
        if abs(acc_ref - acc_train) > self.threshold:
            new = finer(solver, self.max_steps)
            if new is None:
                return solver, {**record, "action": "at_limit", "new": describe(solver)}
            return new, {**record, "action": "finer", "new": describe(new)}
        candidate = coarser(solver, self.growth)
        if candidate is None:
            return solver, None
        acc_candidate, _ = accuracy(candidate)
        if abs(acc_ref - acc_candidate) > self.threshold:
            return solver, None
        return candidate, {**record, "action": "coarser", "new": describe(candidate),
                           "acc_new_solver": acc_candidate}
