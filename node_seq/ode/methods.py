"""Every ODE method node-seq can run, each declared once, with what may be done with it.

:data:`REGISTRY` is the one list of methods: :class:`~node_seq.ode.SolverConfig` validates against
it, ``solve`` finds each method's step (its tableau, embedded pair or torchdiffeq's solver) in it,
and the option schema's choices and help, the fallback's choices and the front ends' lists are
views of it (:class:`MethodNames`). Adding a method is one :func:`register` call, below; a test adds
one for its own duration with :func:`registered`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator, Mapping, Sequence

from .embedded import EmbeddedPair
from .schemes import GatedRK2, PredictorCorrector, ReversibleHeun, RungeKutta, Scheme, Tableau

#: How a method steps: a fixed grid (``steps`` uniform steps), a learned block (a fixed grid whose
#: step combines its stages with the layer's learned coefficients) or adaptive (error control).
FIXED, LEARNED, ADAPTIVE = "fixed", "learned", "adaptive"
KINDS = (FIXED, LEARNED, ADAPTIVE)
#: How gradients are computed: autograd through the steps, recomputed steps, the continuous
#: adjoint (torchdiffeq), or states rebuilt backwards (a scheme with ``step_back``).
GRADIENTS = ("backprop", "checkpoint", "adjoint", "reversible")
#: Gradient ``checkpoint`` with ``checkpoint_snapshots`` (a binomial schedule), which a method may refuse.
SNAPSHOTS = "checkpoint_snapshots"


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method: what it is (for users and the method reference) and what runs it.

    ``order`` is the order of accuracy (``None`` for a learned block, whose coefficients decide it);
    ``stages`` the field evaluations of one step (an FSAL pair reuses its last as the next first).
    ``gradients`` are the gradient modes :class:`~node_seq.ode.SolverConfig` accepts with it;
    ``refusals`` say why one is refused where the reason is the method's own (``{mode: reason}``;
    :data:`SNAPSHOTS` for checkpoints on a binomial schedule).
    What runs it: ``scheme``, our own fixed-grid step; ``pair``, our own adaptive loop
    (:mod:`.embedded`); ``torchdiffeq``, torchdiffeq's name for it (the adjoint, and adaptive
    methods without a ``pair``), ``None`` where torchdiffeq has no such method. ``fallback``:
    whether a failed solve may be redone with it (a fixed grid needing no special gradient).
    """

    name: str
    kind: str
    order: int | None
    stages: int
    gradients: tuple[str, ...]
    summary: str
    scheme: Scheme | None = None
    pair: EmbeddedPair | None = None
    torchdiffeq: str | None = None
    fallback: bool = False
    refusals: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        problems = list(self._problems())
        if problems:
            raise ValueError(f"method {self.name!r}: {'; '.join(problems)}")

    def _problems(self) -> Iterator[str]:
        if self.kind not in KINDS:
            yield f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
        if not self.gradients or not set(self.gradients) <= set(GRADIENTS):
            yield f"gradients must be some of {', '.join(GRADIENTS)}, got {self.gradients!r}"
        if not set(self.refusals) <= {*GRADIENTS, SNAPSHOTS}:
            yield f"refusals are keyed by {', '.join(GRADIENTS)} or {SNAPSHOTS}, got {', '.join(self.refusals)}"
        if (self.kind == ADAPTIVE) == (self.scheme is not None):
            yield "a fixed grid or learned block needs a scheme (its step), an adaptive method none"
        if self.kind == ADAPTIVE and self.pair is None and self.torchdiffeq is None:
            yield "an adaptive method needs a pair (our own loop) or a torchdiffeq name"
        if "adjoint" in self.gradients and self.torchdiffeq is None:
            yield "gradient 'adjoint' integrates with torchdiffeq: it needs the method's torchdiffeq name"
        if self.kind == ADAPTIVE and {"checkpoint", "reversible"} & set(self.gradients):
            yield "gradients 'checkpoint' and 'reversible' need a fixed grid"
        if "reversible" in self.gradients and not hasattr(self.scheme, "step_back"):
            yield "gradient 'reversible' needs a scheme that can step back"
        if self.fallback and (self.kind != FIXED or "backprop" not in self.gradients):
            yield "a fallback must be a fixed grid that allows gradient 'backprop'"
        declared = self.scheme.stages if self.scheme is not None else self.pair.stages if self.pair else None
        if declared is not None and declared != self.stages:
            yield f"stages is {self.stages}, but its step evaluates the field {declared} times"
        if self.pair is not None and self.pair.order != self.order:
            yield f"order is {self.order}, but its pair's is {self.pair.order}"


#: Every method by name, in the order users see them (fixed grids, learned blocks, adaptive).
REGISTRY: dict[str, MethodSpec] = {}


def register(method: MethodSpec) -> MethodSpec:
    """Add ``method`` to :data:`REGISTRY` for good: every list of methods includes it from now on."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is registered already")
    REGISTRY[method.name] = method
    return method


@contextlib.contextmanager
def registered(*methods: MethodSpec) -> Iterator[None]:
    """Inside the block, the registry holds ``methods`` too (replacing those of the same name);
    afterwards it is as it was. For tests, and for benchmarks that run a method another way."""
    saved = dict(REGISTRY)
    REGISTRY.update({method.name: method for method in methods})
    try:
        yield
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


class MethodNames(Sequence[str]):
    """The names of the registered methods that pass ``test``, in registry order, read anew on each
    use: a list that cannot go stale (a method registered later, even for one test, is in it)."""

    def __init__(self, test: Callable[[MethodSpec], bool]):
        self._test = test

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, method in REGISTRY.items() if self._test(method))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        method = REGISTRY.get(name) if isinstance(name, str) else None
        return method is not None and self._test(method)

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return self._names() + tuple(other)

    def __radd__(self, other: Sequence[str]) -> tuple[str, ...]:
        return tuple(other) + self._names()

    def __repr__(self) -> str:
        return repr(self._names())


METHODS = MethodNames(lambda method: True)
FIXED_GRID_METHODS = MethodNames(lambda method: method.kind == FIXED)
#: Fixed-grid blocks whose step combines its stages with learned coefficients (the ODE
#: Transformer's gated RK2, a PCformer-style predictor-corrector): the layer owns the coefficients
#: and hands them to each solve.
LEARNED_METHODS = MethodNames(lambda method: method.kind == LEARNED)
ADAPTIVE_METHODS = MethodNames(lambda method: method.kind == ADAPTIVE)
#: Methods a failed solve can be redone with.
FALLBACK_METHODS = MethodNames(lambda method: method.fallback)


def allowing(gradient: str) -> MethodNames:
    """The methods that allow gradient mode ``gradient``."""
    return MethodNames(lambda method: gradient in method.gradients)


# ---------------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------------

EULER = Tableau(c=(0.0,), a=((),), b=(1.0,))
MIDPOINT = Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))
HEUN = Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))
# Kutta's 3/8 rule: the fourth-order method torchdiffeq calls "rk4", so the adjoint route (which
# integrates with torchdiffeq) and our own loop compute the same solution.
RK4_3_8 = Tableau(c=(0.0, 1 / 3, 2 / 3, 1.0), a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                  b=(1 / 8, 3 / 8, 3 / 8, 1 / 8))
# The classic fourth-order method, the ODE Transformer's RK4 block.
RK4_CLASSIC = Tableau(c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                      b=(1 / 6, 1 / 3, 1 / 3, 1 / 6))
# Dormand-Prince 5(4) with Shampine's embedded solution (torchdiffeq's dopri5).
DOPRI5 = EmbeddedPair(
    order=5,
    nodes=(1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    coupling=(
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    error=(35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
           -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60),
)
# Bogacki-Shampine 3(2).
BOSH3 = EmbeddedPair(order=3, nodes=(1 / 2, 3 / 4, 1.0), coupling=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
                     error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8))

_STEPPED = ("backprop", "checkpoint")  # autograd through our own steps, stored or recomputed
_GRID = (*_STEPPED, "adjoint")
_UNDONE = (*_GRID, "reversible")
_ADAPTIVE = ("backprop", "adjoint")

for _method in (
    MethodSpec("euler", FIXED, 1, 1, _UNDONE, "explicit Euler", scheme=RungeKutta(EULER), torchdiffeq="euler",
               fallback=True),
    MethodSpec("midpoint", FIXED, 2, 2, _GRID, "explicit midpoint", scheme=RungeKutta(MIDPOINT),
               torchdiffeq="midpoint", fallback=True),
    MethodSpec("heun", FIXED, 2, 2, _UNDONE, "Heun's method (explicit trapezoidal)", scheme=RungeKutta(HEUN),
               torchdiffeq="heun2", fallback=True),
    MethodSpec("rk4", FIXED, 4, 4, _GRID, "Kutta's 3/8 rule (torchdiffeq's rk4)", scheme=RungeKutta(RK4_3_8),
               torchdiffeq="rk4", fallback=True),
    MethodSpec("rk4_classic", FIXED, 4, 4, _STEPPED, "the classic fourth-order Runge-Kutta method",
               scheme=RungeKutta(RK4_CLASSIC), fallback=True, refusals={
                   "adjoint": "gradient 'adjoint' integrates with torchdiffeq, which has no classic RK4 (its 'rk4' is "
                              "Kutta's 3/8 rule, our 'rk4'): use method 'rk4' with 'adjoint', or 'rk4_classic' with "
                              "'backprop' or 'checkpoint'"}),
    MethodSpec("reversible_heun", FIXED, 2, 1, (*_STEPPED, "reversible"),
               "reversible Heun (Kidger et al., 2021): algebraically invertible steps", scheme=ReversibleHeun(),
               refusals={"adjoint": "'reversible_heun' has its own exact gradient: use gradient 'reversible' (or "
                                    "'backprop'/'checkpoint'), not 'adjoint'",
                         SNAPSHOTS: "'reversible_heun' needs no snapshots: use gradient 'reversible', whose memory "
                                    "does not grow with the steps"}),
    MethodSpec("rk2_gated", LEARNED, None, 2, _STEPPED, "the ODE Transformer's gated RK2 block (Li et al., 2022)",
               scheme=GatedRK2(HEUN)),
    MethodSpec("pc", LEARNED, None, 3, _STEPPED, "a PCformer-style predictor-corrector block (Li et al., 2024)",
               scheme=PredictorCorrector(HEUN)),
    MethodSpec("dopri5", ADAPTIVE, 5, 7, _ADAPTIVE, "Dormand-Prince 5(4)", pair=DOPRI5, torchdiffeq="dopri5"),
    MethodSpec("bosh3", ADAPTIVE, 3, 4, _ADAPTIVE, "Bogacki-Shampine 3(2)", pair=BOSH3, torchdiffeq="bosh3"),
    MethodSpec("adaptive_heun", ADAPTIVE, 2, 2, _ADAPTIVE, "Heun-Euler 2(1)", torchdiffeq="adaptive_heun"),
    MethodSpec("dopri8", ADAPTIVE, 8, 14, _ADAPTIVE, "Dormand-Prince 8(7)", torchdiffeq="dopri8"),
    MethodSpec("fehlberg2", ADAPTIVE, 2, 3, _ADAPTIVE, "Runge-Kutta-Fehlberg 2(1)", torchdiffeq="fehlberg2"),
):
    register(_method)
