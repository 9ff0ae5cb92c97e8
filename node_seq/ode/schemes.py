"""Fixed-grid methods, one step at a time: the step and the loop every fixed-grid integrator shares.

A scheme says how to take one step of its method (and how to take it back, where a step can be
undone); a :class:`Grid` binds a scheme to one solve's field, stage times and step size;
:meth:`Grid.march` is the only step loop. The integrators (plain and checkpointed in
``fixed_grid``, binomial checkpointing, the reversible gradients) differ only in what they do
around each step. Learned blocks (``rk2_gated``, ``pc``) are schemes too: their coefficients
belong to the layer and reach the step through the solve's field.

The step is kept lean because it sits under every NODE layer: stage times are computed once per
solve as one tensor (no host synchronisation per step), the state is never concatenated, and each
stage combination is a single fused ``add``/``add_`` chain over the stages it needs.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Protocol, Sequence, Union

import torch

from .stats import CountingField, Stage

#: The tensors a step carries from one grid point to the next; ``state[0]`` is always ``y``.
State = tuple[torch.Tensor, ...]


class Tableau(NamedTuple):
    """Butcher tableau of an explicit method: stage times ``c``, stage weights ``a``, output ``b``."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]

    @property
    def num_stages(self) -> int:
        return len(self.c)


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
    if isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor) or torch.compiler.is_compiling():
        # (a compiled graph holds the times as constants: the cache would only be traced through)
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


def explicit_stages(grid: "Grid", i: int, y: torch.Tensor, a: Sequence[Sequence[float]],
                    num_stages: int) -> list[torch.Tensor]:
    """The stage values ``k_j = f(t_i + c_j h, y + h sum_l a_jl k_l)`` of step ``i``, in order.

    ``num_stages`` is the step's total number of evaluations (the stage cache's stride), which a
    learned block's corrector makes larger than ``len(a)``.
    """
    h = grid.h
    ks: list[torch.Tensor] = []
    for j, weights in enumerate(a):
        y_stage = combine(y, h, weights, ks) if j else y
        ks.append(grid.field.call_at_stage(Stage(i, j, num_stages, grid.times[i][j]), y_stage))
    return ks


class RungeKutta:
    """An explicit Runge-Kutta method given by its tableau; its state is ``(y,)``.

    Taken back (:meth:`step_back`) by running the same method from ``t_{i+1}`` to ``t_i``: an
    approximation whose error shrinks with the step.
    """

    kind = "runge_kutta"

    def __init__(self, tableau: Tableau):
        self.tableau = tableau
        self.stages = tableau.num_stages

    def times_and_step(self, t0, t1, steps: int, like: torch.Tensor):
        times = stage_times(t0, t1, steps, self.tableau.c, like)
        return times, (t1 - t0) / steps

    def start(self, grid: "Grid", y0: torch.Tensor) -> State:
        return (y0,)

    def step(self, grid: "Grid", i: int, state: State) -> State:
        """One step from ``y``; the vector field sees each stage's index and time."""
        (y,) = state
        ks = explicit_stages(grid, i, y, self.tableau.a, self.tableau.num_stages)
        return (combine(y, grid.h, self.tableau.b, ks),)

    def step_back(self, grid: "Grid", i: int, state: State) -> State:
        """Undo step ``i`` approximately: the method run from ``t_{i+1}`` back to ``t_i``."""
        (y_next,) = state
        tableau, h = self.tableau, grid.h
        t_next = grid.times[i][0] + h
        ks: list[torch.Tensor] = []
        for j, weights in enumerate(tableau.a):
            y_stage = combine(y_next, -h, weights, ks) if j else y_next
            t_stage = t_next - tableau.c[j] * h
            ks.append(grid.field.call_at_stage(Stage(i, j, tableau.num_stages, t_stage), y_stage))
        return (combine(y_next, -h, tableau.b, ks),)


class ReversibleHeun:
    """Reversible Heun (Kidger et al., 2021); its state is ``(y, z, f(z))``.

    One evaluation per grid point ``t_0 .. t_N``: each step reuses ``f(z)`` from the step before.
    The step is algebraically invertible, so :meth:`step_back` is exact up to rounding.
    """

    kind = "invertible"  # exactly undone by step_back
    stages = 1  # f(z) at the step's end; its start's comes from the step before

    def times_and_step(self, t0, t1, steps: int, like: torch.Tensor):
        h = (t1 - t0) / steps
        return stage_times(t0, t1 + h, steps + 1, (0.0,), like), h

    def at_point(self, grid: "Grid", i: int, y: torch.Tensor, z: torch.Tensor) -> State:
        """The state at grid point ``i`` from ``y`` and ``z``: evaluates ``f(z)`` there."""
        return y, z, self._evaluate(grid, i, z)

    def start(self, grid: "Grid", y0: torch.Tensor) -> State:
        return self.at_point(grid, 0, y0, y0)

    def step(self, grid: "Grid", i: int, state: State) -> State:
        y, z, f_z = state
        h = grid.h
        z_next = combine(2 * y - z, h, (1.0,), (f_z,))
        f_next = self._evaluate(grid, i + 1, z_next)
        y_next = y + (0.5 * h) * (f_z + f_next)
        return y_next, z_next, f_next

    def step_back(self, grid: "Grid", i: int, state: State) -> State:
        """The exact inverse of step ``i``."""
        y, z, f_z = state
        h = grid.h
        z_prev = (2 * y - z).sub_(f_z, alpha=h)
        f_prev = self._evaluate(grid, i, z_prev)
        y_prev = y - (0.5 * h) * (f_prev + f_z)
        return y_prev, z_prev, f_prev

    @staticmethod
    def _evaluate(grid: "Grid", i: int, z: torch.Tensor) -> torch.Tensor:
        return grid.field.call_at_stage(Stage(i, 0, 1, grid.times[i][0]), z)


class GateCoefficients(Protocol):
    """What :class:`GatedRK2` reads from the layer's coefficients."""

    def gate(self, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        """The weight ``g`` in (0, 1) of the first stage, broadcastable against the stages."""


class PredictorCorrectorCoefficients(Protocol):
    """What :class:`PredictorCorrector` reads from the layer's coefficients."""

    alpha: torch.Tensor  # the predictor's EMA coefficient
    beta: torch.Tensor  # the corrector's weight of the corrected stage

    def normalize(self, stage: int, k: torch.Tensor) -> torch.Tensor:
        """Stage ``stage``'s value as it enters a combination (a LayerNorm of its own)."""


class _LearnedBlock:
    """A fixed-grid block whose step combines its stages with learned coefficients; state ``(y,)``.

    The coefficients are parameters of the layer, not of this (stateless, shared) scheme: each
    solve receives them (``solve(..., coefficients=...)``) and reads them here as
    ``grid.field.coefficients``. A learned step is no ODE solver's step, so it has no
    ``step_back``: the reversible and adjoint gradients do not apply (``SolverConfig`` refuses them).
    """

    kind = "learned"
    c: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.c)

    def times_and_step(self, t0, t1, steps: int, like: torch.Tensor):
        return stage_times(t0, t1, steps, self.c, like), (t1 - t0) / steps

    def start(self, grid: "Grid", y0: torch.Tensor) -> State:
        return (y0,)


class GatedRK2(_LearnedBlock):
    """The ODE Transformer's learned RK2 block (Li et al., ACL 2022), two evaluations per step.

    Heun's stages ``k1 = f(t, y)``, ``k2 = f(t + h, y + h k1)``, mixed per token by a learned gate:
    ``y + h (g k1 + (1 - g) k2)``, ``g = coefficients.gate(k1, k2)``. With ``g = 1/2`` it is ``heun``,
    whose tableau (``heun``) gives the stages.
    """

    def __init__(self, heun: Tableau):
        self.heun, self.c = heun, heun.c

    def step(self, grid: "Grid", i: int, state: State) -> State:
        (y,) = state
        k1, k2 = explicit_stages(grid, i, y, self.heun.a, 2)
        g = grid.field.coefficients.gate(k1, k2)
        return (combine(y, grid.h, (1.0,), (g * k1 + (1 - g) * k2,)),)


class PredictorCorrector(_LearnedBlock):
    """A predictor-corrector block after PCformer (Li et al., NeurIPS 2024), three evaluations per step.

    Predictor: Heun's stages ``k1 = f(t, y)``, ``k2 = f(t + h, y + h k1)``, each normalised
    (``F_j = N_j(k_j)``) and combined with PCformer's EMA coefficients of one learned ``alpha``:
    ``y_p = y + h (alpha (1 - alpha) F1 + alpha F2)``. Corrector, on one layer (PCformer's combines
    states across layers): a trapezoidal (Adams-Moulton 2) step with a learned weight,
    ``y + h ((1 - beta) F1 + beta F3)`` with ``F3 = N_3(f(t + h, y_p))``. Stage inputs use the
    raw ``k``, combinations the normalised ``F``, as in PCformer's code. ``heun`` is Heun's tableau.
    """

    def __init__(self, heun: Tableau):
        self.heun, self.c = heun, (*heun.c, 1.0)

    def step(self, grid: "Grid", i: int, state: State) -> State:
        (y,) = state
        h, learned = grid.h, grid.field.coefficients
        k1, k2 = explicit_stages(grid, i, y, self.heun.a, 3)
        f1, f2 = learned.normalize(0, k1), learned.normalize(1, k2)
        alpha, beta = learned.alpha, learned.beta
        y_predicted = combine(y, h, (1.0,), (alpha * (1 - alpha) * f1 + alpha * f2,))
        k3 = grid.field.call_at_stage(Stage(i, 2, 3, grid.times[i][2]), y_predicted)
        return (combine(y, h, (1.0,), ((1 - beta) * f1 + beta * learned.normalize(2, k3),)),)


#: The step of a fixed-grid method (learned blocks included); each method's is in the registry
#: (:mod:`.methods`).
Scheme = Union[RungeKutta, ReversibleHeun, GatedRK2, PredictorCorrector]

Step = Callable[[int, State], State]


class Grid(NamedTuple):
    """One fixed-grid solve: its scheme, the field it evaluates, its stage times and step size."""

    scheme: Scheme
    field: CountingField
    steps: int
    times: tuple[tuple[torch.Tensor, ...], ...]
    h: float | torch.Tensor

    @classmethod
    def over(cls, scheme: Scheme, field: CountingField, t0, t1, steps: int, like: torch.Tensor) -> "Grid":
        """``steps`` uniform steps of ``scheme`` over ``[t0, t1]`` (numbers, or tensors for time gradients)."""
        times, h = scheme.times_and_step(t0, t1, steps, like)
        return cls(scheme, field, steps, times, h)

    def start(self, y0: torch.Tensor) -> State:
        return self.scheme.start(self, y0)

    def step(self, i: int, state: State) -> State:
        return self.scheme.step(self, i, state)

    def step_back(self, i: int, state: State) -> State:
        return self.scheme.step_back(self, i, state)

    def march(self, state: State, start: int, stop: int, step: Step | None = None) -> State:
        """Steps ``start .. stop - 1`` from ``state``, each through ``step`` (default: a plain step).

        Integrators pass their own ``step`` to wrap each one (checkpoint it, record it, replay
        it); the step itself is always :meth:`step`.
        """
        step = step or self.step
        for i in range(start, stop):
            state = step(i, state)
        return state
