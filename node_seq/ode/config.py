"""Solver options, validated once at the door.

:class:`SolverConfig` is what every front end (fairseq flags, HF config fields, the vision YAML)
turns its options into. Validation lives here so all front ends reject the same bad values with
the same words; ``option_names`` lets each front end name the option the way its user typed it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Mapping, Sequence

from .methods import ADAPTIVE, GRADIENTS, LEARNED, METHODS, REGISTRY, SNAPSHOTS, MethodSpec, allowing

DEFAULT_MAX_NUM_STEPS = 1000
#: How an adaptive solve controls its steps: one controller for the whole state (``batch``), or
#: one per row of the batch, dimension 0 (``sequence``: a sentence's steps do not depend on its
#: neighbours; our own loop only, see :func:`~node_seq.ode.embedded.integrate_rows`).
STEP_CONTROLS = ("batch", "sequence")


class OptionError(ValueError):
    """An option has a value outside what is allowed; the message names both."""


def _fail(names: Mapping[str, str], field: str, message: str) -> None:
    raise OptionError(f"{names.get(field, field)}: {message}")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """How to integrate one ODE block.

    Fixed-grid methods (learned blocks included) use ``steps`` (or ``step_size``, rounded so the
    grid is uniform) over ``[t0, t1]``; adaptive methods use ``rtol``/``atol`` and stop with an
    error after ``max_num_steps`` steps (per row under ``step_control="sequence"``: see
    :data:`STEP_CONTROLS`; the core's default is ``batch``, since a generic state need not have
    rows, while the model front ends default to ``sequence``). Their first step is ``first_step`` (at most the interval;
    the controller shrinks it if it fails the error test), or, when ``None``, Hairer's estimate,
    which costs one more evaluation and is usually far smaller. ``compact_rows``: under per-row
    control, evaluate the field only on the rows still stepping (see
    :func:`~node_seq.ode.embedded.integrate_rows`); the result is the same either way, and under
    batch control, where every row steps until the last is done, it changes nothing.
    """

    method: str = "dopri5"  # the defaults are every front end's (DEFAULT_SOLVER)
    steps: int | None = None
    step_size: float | None = None
    rtol: float = 1e-3
    atol: float = 1e-4
    first_step: float | None = None
    gradient: str = "backprop"
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    seminorm: bool = False
    checkpoint_snapshots: int | None = None
    max_num_steps: int = DEFAULT_MAX_NUM_STEPS
    step_control: str = "batch"
    compact_rows: bool = True
    t0: float = 0.0
    t1: float = 1.0

    @property
    def method_spec(self) -> MethodSpec:
        """The registry's entry for ``method``: what it is and what runs it."""
        if self.method not in METHODS:
            raise OptionError("method: " + _unknown_method(self.method))
        return REGISTRY[self.method]

    @property
    def is_fixed_grid(self) -> bool:
        return self.method_spec.kind != ADAPTIVE

    @property
    def is_learned(self) -> bool:
        """Whether the step's combination is learned: ``solve`` then needs the ``coefficients``."""
        return self.method_spec.kind == LEARNED

    @property
    def grid_steps(self) -> int:
        """The uniform steps of a fixed-grid solve: ``steps``, or what ``step_size`` asks for, or one."""
        if self.step_size is not None:
            return steps_for_step_size(self.t0, self.t1, self.step_size)
        return self.steps or 1

    def validate(self, option_names: Mapping[str, str] | None = None) -> "SolverConfig":
        """Raise :class:`OptionError` for the first invalid option; return ``self`` otherwise.

        A front end calls it with ``option_names`` to name options as its user typed them.
        """
        names = option_names or {}
        if self.method not in METHODS:
            _fail(names, "method", _unknown_method(self.method))
        if self.gradient not in GRADIENTS:
            _fail(names, "gradient", f"unknown gradient mode {self.gradient!r}; choose one of {', '.join(GRADIENTS)}")
        if self.steps is not None and self.step_size is not None:
            _fail(names, "steps", f"give either {names.get('steps', 'steps')} or "
                  f"{names.get('step_size', 'step_size')}, not both")
        if self.steps is not None and (isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1):
            _fail(names, "steps", f"must be an integer >= 1, got {self.steps!r}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            _fail(names, "step_size", f"must be a finite number > 0, got {self.step_size!r}")
        for field in ("rtol", "atol", "adjoint_rtol", "adjoint_atol", "first_step"):
            value = getattr(self, field)
            if value is not None and not (math.isfinite(value) and value > 0):
                _fail(names, field, f"must be a finite number > 0, got {value!r}")
        if isinstance(self.max_num_steps, bool) or int(self.max_num_steps) != self.max_num_steps or self.max_num_steps < 1:
            _fail(names, "max_num_steps", f"must be an integer >= 1, got {self.max_num_steps!r}")
        if not (math.isfinite(self.t0) and math.isfinite(self.t1) and self.t1 > self.t0):
            _fail(names, "t1", f"the time interval must be increasing and finite, got [{self.t0!r}, {self.t1!r}]")
        if self.first_step is not None and self.is_fixed_grid:
            _fail(names, "first_step", f"applies to adaptive methods only; {self.method!r} steps on a fixed grid "
                  f"(set {names.get('steps', 'steps')} or {names.get('step_size', 'step_size')})")
        if self.gradient not in self.method_spec.gradients:
            _fail(names, *self._refusal())
        if self.checkpoint_snapshots is not None:
            self._validate_snapshots(names)
        self._validate_step_control(names)
        object.__setattr__(self, "_validated", True)  # frozen fields: valid once, valid for good
        return self

    def ensure_valid(self) -> "SolverConfig":
        """``self``, validated unless it already was: :func:`~node_seq.ode.solve` calls this on
        every solve, so a layer's config is checked on its first solve only."""
        if not self.__dict__.get("_validated", False):
            self.validate()
        return self

    def _refusal(self) -> tuple[str, str]:
        """The option to blame and why, for a gradient mode the method does not allow."""
        spec, gradient = self.method_spec, self.gradient
        if gradient in spec.refusals:
            return "method", spec.refusals[gradient]
        allowed = " or ".join(map(repr, spec.gradients))
        if spec.kind == LEARNED:
            return "gradient", (f"{gradient!r} cannot differentiate the learned block {self.method!r} (its step is no "
                                f"ODE solver's, and its coefficients are no part of the field); use {allowed}")
        if spec.kind == ADAPTIVE and gradient in ("checkpoint", "reversible"):
            return "gradient", (f"{gradient!r} needs a fixed-grid method ({', '.join(allowing(gradient))}); with "
                                f"{self.method!r} use {allowed}")
        if gradient == "reversible":
            return "method", f"gradient 'reversible' runs only {', '.join(allowing(gradient))} backwards, got {self.method!r}"
        return "gradient", f"method {self.method!r} does not allow {gradient!r}; use {allowed}"

    def _validate_snapshots(self, names: Mapping[str, str]) -> None:
        value = self.checkpoint_snapshots
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(names, "checkpoint_snapshots", f"must be an integer >= 0 (states stored besides the initial one), "
                  f"got {value!r}")
        if self.gradient != "checkpoint":
            _fail(names, "checkpoint_snapshots", f"applies only to gradient 'checkpoint', not {self.gradient!r}; "
                  "leave it unset")
        if SNAPSHOTS in self.method_spec.refusals:
            _fail(names, "checkpoint_snapshots", self.method_spec.refusals[SNAPSHOTS])

    @property
    def compacts(self) -> bool:
        """Whether a per-row solve leaves the rows that reached ``t1`` out of its evaluations."""
        return self.per_row and self.compact_rows

    @property
    def per_row(self) -> bool:
        """Whether the solve controls each row's steps itself: ``sequence`` on an adaptive method (a
        fixed grid takes the same steps in every row anyway)."""
        return self.step_control == "sequence" and not self.is_fixed_grid

    def _validate_step_control(self, names: Mapping[str, str]) -> None:
        if self.step_control not in STEP_CONTROLS:
            _fail(names, "step_control", f"unknown value {self.step_control!r}; choose one of {', '.join(STEP_CONTROLS)}")
        if not isinstance(self.compact_rows, bool):
            _fail(names, "compact_rows", f"must be True or False, got {self.compact_rows!r}")
        if not self.per_row:
            return
        own = ", ".join(name for name, spec in REGISTRY.items() if spec.pair is not None)
        if self.method_spec.pair is None:
            _fail(names, "step_control", f"'sequence' needs our own adaptive loop ({own}); method {self.method!r} runs "
                  "through torchdiffeq, whose controller is batch-wide: use 'batch' or one of those methods")
        if self.gradient == "adjoint":
            _fail(names, "step_control", f"'sequence' is not supported with gradient 'adjoint' (torchdiffeq's adjoint "
                  f"solves the batch with one controller); use 'batch', or gradient 'backprop' with {own}")

    def with_uniform_grid(self) -> "SolverConfig":
        """The same config with ``step_size`` turned into ``steps`` (see :func:`steps_for_step_size`)."""
        if self.step_size is None:
            return self
        steps = steps_for_step_size(self.t0, self.t1, self.step_size)
        return dataclasses.replace(self, steps=steps, step_size=None)


#: The solver of every front end unless the user chooses another: the option schema's defaults
#: are its fields (its ``initial_step`` sets ``first_step``: the whole interval unless asked for
#: Hairer's estimate), and a model built without a solver uses it.
DEFAULT_SOLVER = SolverConfig()
#: What a failed solve is redone with under the failure policy ``fallback`` unless configured.
DEFAULT_FALLBACK = SolverConfig(method="rk4", steps=4)


def _unknown_method(method: object) -> str:
    return f"unknown method {method!r}; choose one of {', '.join(METHODS)}"


def swap_solver(train: SolverConfig, method: str, factor: float) -> SolverConfig:
    """The solver an elastic-depth test uses: step ``h_train / factor`` (tolerances ``tol / factor``).

    A model trained with an adaptive solver has no training step; its fixed-grid tests take
    ``factor`` steps over the interval (at least one). Used by ``vision.evaluate`` (images) and
    ``node_seq.fairseq.elastic_lm`` (language models).
    """
    base = dataclasses.replace(train, method=method, gradient="backprop", checkpoint_snapshots=None, step_size=None,
                               step_control=train.step_control if getattr(REGISTRY.get(method), "pair", None) else "batch")
    if SolverConfig(method=method).is_fixed_grid:
        train_steps = train.steps if train.is_fixed_grid else 1
        return dataclasses.replace(base, steps=max(1, round((train_steps or 1) * factor)), first_step=None)
    return dataclasses.replace(base, steps=None, rtol=train.rtol / factor, atol=train.atol / factor)


def swap_solvers(train: SolverConfig, methods: Sequence[str], factors: Sequence[float]
                 ) -> Iterator[tuple[str, float, SolverConfig]]:
    """``(method, factor, solver)`` for every pair of an elastic-depth sweep, each solver once.

    Factors whose grids round to the same one (``0.5`` and ``1`` on a one-step model) are one
    measurement; it is listed under the factor that grid describes best (the least rounded).
    """
    train_steps = train.steps if train.is_fixed_grid else 1

    def rounding(factor: float, solver: SolverConfig) -> float:
        return abs(math.log(solver.steps / (train_steps * factor))) if solver.steps else 0.0

    chosen: dict[SolverConfig, tuple[str, float, SolverConfig]] = {}
    for method in methods:
        for factor in factors:
            solver = swap_solver(train, method, factor)
            if solver not in chosen or rounding(factor, solver) < rounding(chosen[solver][1], solver):
                chosen[solver] = (method, factor, solver)
    yield from chosen.values()


def steps_for_step_size(t0: float, t1: float, step_size: float) -> int:
    """The number of uniform steps a ``step_size`` asks for: rounded up, never below one.

    The one rule every front end uses (``h = 1/3`` on ``[0, 1]`` is 3 steps, whatever the float
    rounding of ``1/3``), so the same flag gives the same grid in fairseq, HF and ``solve``.
    """
    return max(1, math.ceil((t1 - t0) / step_size - 1e-9))


def parse_time_points(value: str | Sequence[float], option: str = "ts") -> tuple[float, float]:
    """Read an integration interval such as ``"0,1"`` or ``[0, 1]`` and check that it increases."""
    if isinstance(value, str):
        try:
            points = [float(part) for part in value.replace("[", "").replace("]", "").split(",") if part.strip()]
        except ValueError:
            raise OptionError(f"{option}: expected two comma-separated numbers such as '0,1', got {value!r}") from None
    else:
        points = [float(v) for v in value]
    if len(points) != 2:
        raise OptionError(f"{option}: expected exactly two time points (start, end), got {value!r}")
    if not all(math.isfinite(p) for p in points) or points[1] <= points[0]:
        raise OptionError(f"{option}: time points must be finite and strictly increasing, got {value!r}")
    return points[0], points[1]
