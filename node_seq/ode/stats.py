"""Solve statistics and the evaluation counter that fills them.

Every solve owns a fresh :class:`SolveStats`; nothing is global, so a validation pass can never add
to a training step's counts. Forward and backward evaluations are told apart by phase: once the
forward solve has returned, every further call of the vector field can only come from autograd
(checkpoint recomputation, reversible reconstruction, or the adjoint's augmented dynamics). The
field itself can ask which phase it runs in (:func:`in_backward_solve`), e.g. to leave batch-norm
statistics alone when it is recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn


@dataclasses.dataclass
class SolveStats:
    """What one solve (or a sum of solves) cost.

    ``nfe_backward`` is filled in while ``.backward()`` runs; read it after the backward pass.
    ``num_accepted``/``num_rejected`` are only counted by adaptive methods (fixed grids accept
    every step).
    """

    method: str = ""
    nfe_forward: int = 0
    nfe_backward: int = 0
    num_steps: int = 0
    num_accepted: int = 0
    num_rejected: int = 0
    t_reached: float | None = None
    #: Set instead of raising when the solve runs inside ``torch.compile``: a 0-d bool tensor,
    #: ``True`` if the final state is finite. Reading it is the host synchronisation that the
    #: compiled solve leaves out; :func:`node_seq.nn.layers.check_finite` reads every layer's at once.
    finite: torch.Tensor | None = None
    #: Per-row control only (``step_control="sequence"``), one value per row of the batch: the
    #: steps each row accepted and rejected, and the evaluations it needed (its own steps times the
    #: new stages of a step, plus the first evaluation and Hairer's probe when estimated). The
    #: totals above are the loop's (the slowest row's); what the rows cost is ``row_evaluations``.
    row_accepted: torch.Tensor | None = None
    row_rejected: torch.Tensor | None = None
    row_nfe: torch.Tensor | None = None
    #: The forward solve's work in rows: the sum over its evaluations of the rows evaluated
    #: (dimension 0 of the state). ``rows x nfe_forward`` unless per-row control compacted the batch
    #: to the rows still stepping (``compact_rows``); then it follows the sum of ``row_nfe``.
    row_evaluations: int = 0

    def __add__(self, other: "SolveStats") -> "SolveStats":
        methods = {m for m in (self.method, other.method) if m}
        return SolveStats(
            method="+".join(sorted(methods)),
            nfe_forward=self.nfe_forward + other.nfe_forward,
            nfe_backward=self.nfe_backward + other.nfe_backward,
            row_evaluations=self.row_evaluations + other.row_evaluations,
            num_steps=self.num_steps + other.num_steps,
            num_accepted=self.num_accepted + other.num_accepted,
            num_rejected=self.num_rejected + other.num_rejected,
            **{f"row_{name}": _sum_rows(getattr(self, f"row_{name}"), getattr(other, f"row_{name}"),
                                        getattr(self, total), getattr(other, total))
               for name, total in (("accepted", "num_accepted"), ("rejected", "num_rejected"),
                                   ("nfe", "nfe_forward"))},
        )

    def nfe_per_row(self, rows: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Forward evaluations of each of the ``rows`` rows: ``row_nfe``, or where the solve had no
        per-row control (batch-wide control, a fixed grid), ``nfe_forward`` for every row, since
        every row was evaluated at every step."""
        if self.row_nfe is not None:
            return self.row_nfe
        return torch.full((rows,), self.nfe_forward, device=device)


def _sum_rows(a: torch.Tensor | None, b: torch.Tensor | None, a_total: int, b_total: int) -> torch.Tensor | None:
    """Per-row counts of two solves of the same rows add up. A solve without them took its total in
    every row (batch-wide control, a fixed grid, a fallback), so one side's rows are enough; with
    neither, or rows of two batches, the sum has none."""
    if a is None and b is None:
        return None
    if a is None or b is None:
        return a + b_total if b is None else b + a_total
    return a + b if a.shape == b.shape else None


class Stage(NamedTuple):
    """Where a fixed-grid solver is when it calls the vector field.

    ``index = step * num_stages + stage`` numbers the evaluations of one solve; a decoder uses it
    to keep one key/value cache per evaluation.
    """

    step: int
    stage: int
    num_stages: int
    t: torch.Tensor

    @property
    def index(self) -> int:
        return self.step * self.num_stages + self.stage


class _SolveContext(threading.local):
    """Where the running solve stands, per thread: the stage being evaluated, and whether the
    evaluation comes from a gradient mode inside ``.backward()``.

    A thread-local object rather than context variables: ``torch.compile`` traces attribute writes
    on it (it cannot trace ``ContextVar.set``), so a compiled solve keeps the per-stage decoder
    cache and the backward-phase flag without a graph break.
    """

    def __init__(self):
        # Set per thread (threading.local runs this in each), not as class defaults: a compiled
        # frame guards on the attributes being in the instance's __dict__, and writing a default
        # inside that frame would break its own guard.
        self.stage: Stage | None = None
        self.in_backward = False
        self.evaluation_hook: Callable[..., torch.Tensor] | None = None  # see observe_evaluations
        self.loop = "own"  # see node_seq.ode.adaptive.adaptive_loop
        self.rows: torch.Tensor | None = None  # see evaluated_rows


_CONTEXT = _SolveContext()


def current_stage() -> Stage | None:
    """The fixed-grid stage being evaluated, or ``None`` inside an adaptive solve (or none at all)."""
    return _CONTEXT.stage


@contextlib.contextmanager
def stage_scope(stage: Stage):
    """Evaluate a field "at" ``stage`` outside a solve (e.g. a plain layer's single Euler step)."""
    previous, _CONTEXT.stage = _CONTEXT.stage, stage
    try:
        yield stage
    finally:
        _CONTEXT.stage = previous


def in_backward_solve() -> bool:
    """Whether the vector field is being re-evaluated by a gradient mode inside ``.backward()``.

    ``checkpoint``, ``reversible`` and ``adjoint`` call the field again while gradients are
    computed; a field whose forward has side effects (batch-norm running statistics) can skip
    them there. ``False`` in the forward solve and outside any solve.
    """
    return _CONTEXT.in_backward


def evaluated_rows() -> torch.Tensor | None:
    """The batch rows (indices into dimension 0 of the solve's state) that the field is being
    evaluated on, when per-row control left out the rows that are done (``compact_rows``); ``None``
    when it sees the whole batch. Whatever the field holds for the whole batch of one solve (a
    dropout mask drawn at its first evaluation, the regularisers' noise, an error norm's padding)
    takes these rows of it."""
    return _CONTEXT.rows


@contextlib.contextmanager
def rows_scope(rows: torch.Tensor | None) -> Iterator[None]:
    """Evaluate the field on ``rows`` of the batch (see :func:`evaluated_rows`)."""
    previous, _CONTEXT.rows = _CONTEXT.rows, rows
    try:
        yield
    finally:
        _CONTEXT.rows = previous


@contextlib.contextmanager
def observe_evaluations(hook: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Run every vector-field evaluation of the solves started inside the block as ``hook(func, t, y,
    *inputs)``, which must return ``func(t, y, *inputs)``: a benchmark times or traces evaluations
    this way (``benchmarks.adaptive_path``). The hook is chosen once per solve, when its field is
    made, so a solve started outside the block pays nothing per evaluation."""
    previous, _CONTEXT.evaluation_hook = _CONTEXT.evaluation_hook, hook
    try:
        yield
    finally:
        _CONTEXT.evaluation_hook = previous


class CountingField:
    """Calls ``func(t, y, *inputs)`` and counts each call into ``stats``.

    Also carries torchdiffeq's step callbacks, which count accepted/rejected steps and enforce
    ``max_num_steps`` with an error that says where the solve stood, and a learned block's
    ``coefficients`` (read by its scheme, differentiated with the field's parameters).
    """

    def __init__(self, func: Callable[..., torch.Tensor], inputs: tuple[Any, ...], stats: SolveStats,
                 *, max_num_steps: int, on_limit: Callable[[str], Exception], coefficients: Any = None):
        self.func, self.inputs, self.stats = func, inputs, stats
        hook = _CONTEXT.evaluation_hook
        self._evaluate = func if hook is None else functools.partial(hook, func)
        self.coefficients = coefficients
        self.backward_phase = False
        self.max_num_steps = max_num_steps
        self.on_limit = on_limit
        self._backward_steps = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.backward_phase:
            self.stats.nfe_backward += 1
            previous, _CONTEXT.in_backward = _CONTEXT.in_backward, True
            try:
                return self._evaluate(t, y, *self.inputs)
            finally:
                _CONTEXT.in_backward = previous
        self.stats.nfe_forward += 1
        self.stats.row_evaluations += y.shape[0] if y.dim() else 1
        return self._evaluate(t, y, *self.inputs)

    def trainable_parameters(self) -> tuple[torch.Tensor, ...]:
        """The parameters that want gradients: the wrapped field's (a plain function has none),
        then those of a learned block's coefficients."""
        modules = [m for m in (self.func, self.coefficients) if isinstance(m, nn.Module)]
        return tuple(p for module in modules for p in module.parameters() if p.requires_grad)

    def count_grid_steps(self, steps: int) -> None:
        """A fixed grid accepts every step; counted once per solve, whichever integrator ran it.
        (Adaptive steps are counted one by one by the step callbacks below.)"""
        self.stats.num_steps += steps
        self.stats.num_accepted += steps

    def detach_inputs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Make the field read detached leaf copies of the inputs that want gradients.

        Used by the gradient modes that differentiate the field themselves (adjoint,
        reversible): they take gradients with respect to these leaves and hand them back to the
        original inputs once, through autograd. Differentiating the originals directly would walk
        into the graph that produced them (e.g. the encoder and the projections of its output),
        counting those parameters' gradients twice and freeing that graph early.
        Returns ``(originals, leaves)``.
        """
        originals, leaves, inputs = [], [], []
        for x in self.inputs:
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.requires_grad:
                leaf = x.detach().requires_grad_()
                originals.append(x)
                leaves.append(leaf)
                x = leaf
            inputs.append(x)
        self.inputs = tuple(inputs)
        return originals, leaves

    def call_at_stage(self, stage: Stage, y: torch.Tensor) -> torch.Tensor:
        previous, _CONTEXT.stage = _CONTEXT.stage, stage  # stage_scope, without a generator per evaluation
        try:
            return self(stage.t, y)
        finally:
            _CONTEXT.stage = previous

    # torchdiffeq looks these up on the function it is given.
    def callback_accept_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.stats.num_accepted += 1
        end = t0 + dt  # tensors from torchdiffeq, numbers from our own loop
        self.stats.t_reached = float(end.detach() if isinstance(end, torch.Tensor) else end)
        self._count_step()

    def callback_reject_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.stats.num_rejected += 1
        self._count_step()

    def callback_accept_step_adjoint(self, t0, y0, dt) -> None:
        self._count_backward_step()

    def callback_reject_step_adjoint(self, t0, y0, dt) -> None:
        self._count_backward_step()

    def _count_step(self) -> None:
        self.stats.num_steps = self.stats.num_accepted + self.stats.num_rejected
        if self.stats.num_steps >= self.max_num_steps:
            raise self.on_limit("forward")

    def _count_backward_step(self) -> None:
        self._backward_steps += 1
        if self._backward_steps >= self.max_num_steps:
            raise self.on_limit("backward (adjoint)")
