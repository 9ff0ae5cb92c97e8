"""Our own step loop for the embedded Runge-Kutta pairs dopri5 and bosh3 (gradient ``backprop``).

Why not torchdiffeq's loop, which the adjoint and the other adaptive methods still use:

* **The first step is the config's** (``first_step``, e.g. the whole interval), so a block whose
  field is gentle costs one step: ``f0`` plus the stages. torchdiffeq's estimate (Hairer's rule)
  spends an evaluation on a probe and, on a near-identity Transformer layer at rtol 1e-2, starts
  with 1-10% of the interval, so the solve takes 3-5 steps where one passes the error test.
* **The last step lands on t1**: ``y(t1)`` is that step's error-controlled solution, and autograd
  never goes through its FSAL evaluation ``f(t1, y1)``, which only feeds the error estimate.
  torchdiffeq steps past t1 and interpolates, through every stage.
* **Step sizes are plain numbers**: accept/reject and the next step are decided without a graph
  (one host read per step, the error ratio), so no gradient flows through the controller.
  torchdiffeq's first-step estimate keeps a graph, and its probe evaluation is backpropagated.

What is solved is unchanged: the same tableaux (torchdiffeq's error estimates), the same error
test ``norm(err / (atol + rtol * max(|y0|, |y1|))) <= 1`` with the caller's norm, and the same
step-size controller (safety 0.9, growth at most 10x, shrink at most 5x on a rejection).

**Mixed precision**: under autocast the field returns bfloat16 (or float16) stage values. The
state is combined in its own dtype (float32 in the models: ``y + h * k`` promotes), but the error
estimate is a sum of stage values whose weights add up to zero, so it is all cancellation: summed in
bfloat16 it is mostly rounding, and so is the starting step's difference of two slopes. The
controller therefore works in :func:`controller_dtype` (at least float32); a float32 or float64
solve is untouched.

**Per-row control** (``step_control="sequence"``, :func:`integrate_rows`): each row of the batch
(dimension 0: a sentence) has its own time, step size, accept/reject and step count, with the
error norm taken per row. A row's result is then what it would be alone, whatever shares its
batch. The field is evaluated at each row's own time (``t`` of shape ``(batch, 1, ...)``), on the
rows still stepping (or, without ``compact_rows``, on every row), and a step is committed only for
the rows that are still stepping and passed their error test; a finished row's state is held
exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Callable

import torch

from .precision import controller_dtype
from .stats import CountingField, rows_scope

if TYPE_CHECKING:  # the registry holds the pairs and SolverConfig reads the registry
    from .config import SolverConfig

SAFETY, MAX_GROWTH, MAX_SHRINK = 0.9, 10.0, 0.2
#: A step below this fraction of the interval cannot move the time: the solve has underflowed.
MIN_STEP_FRACTION = 1e-14
#: A step that ends this close to t1 (as a fraction of the interval) is stretched to land on it.
LANDING_SLACK = 1e-12


@dataclasses.dataclass(frozen=True)
class EmbeddedPair:
    """An explicit FSAL Runge-Kutta pair: the last stage is ``f(t1, y1)``, reused as the next ``f0``.

    ``nodes[i]`` and ``coupling[i]`` make stage ``i + 2``; the last row of ``coupling`` is the
    propagated solution's weights. ``error`` weighs all stages into ``y1 - y1_embedded``.
    ``order`` sets the controller's exponent ``1 / order``. The pairs are in the registry
    (:mod:`.methods`).
    """

    order: int
    nodes: tuple[float, ...]
    coupling: tuple[tuple[float, ...], ...]
    error: tuple[float, ...]

    @property
    def stages(self) -> int:
        return len(self.nodes) + 1


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x.to(controller_dtype(x)).pow(2).mean().sqrt()


def integrate_embedded(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                       norm: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Solve from ``t0`` to ``t1`` with ``config.method`` (a method with a ``pair``); return ``y(t1)``.

    The loop runs on the fraction ``s`` of the interval (``t = t0 + s (t1 - t0)``, ``dy/ds = (t1 -
    t0) f``), so tensor end points keep their graph (time gradients) while steps stay numbers.
    """
    pair = config.method_spec.pair
    norm = norm or rms_norm
    times = _Times(t0, t1, y0)
    rtol, atol = config.rtol, config.atol
    dtype = controller_dtype(y0)

    def slope(s: float, y: torch.Tensor) -> torch.Tensor:
        return times.scale(field(times.at(s), y))

    def error_ratio(y: torch.Tensor, y1: torch.Tensor, ks: list[torch.Tensor], h: float) -> float:
        with torch.no_grad():
            err = _combine(None, ks, pair.error, h, dtype=dtype)
            scale = torch.maximum(y.abs(), y1.abs()).to(dtype).mul_(rtol).add_(atol)
            return float(norm(err.div_(scale)))

    s, y, f0 = 0.0, y0, slope(0.0, y0)
    h = _first_step(slope, y0, f0, pair.order, rtol, atol, norm) if config.first_step is None else \
        config.first_step / times.length
    while s < 1.0:
        if not h >= MIN_STEP_FRACTION or s + h <= s:  # also a nan step (from a non-finite state)
            raise field.on_limit("underflow")
        lands = s + h >= 1.0 - LANDING_SLACK  # never leave a sliver of the interval for a last step
        if lands:
            h = 1.0 - s
        ks = [f0]
        for node, row in zip(pair.nodes, pair.coupling):
            y_stage = _combine(y, ks, row, h)
            ks.append(slope(1.0 if lands and node == 1.0 else s + node * h, y_stage))
        y1 = y_stage  # FSAL: the last stage is evaluated at the step's solution
        ratio = error_ratio(y, y1, ks, h)
        accepted = ratio <= 1.0  # False for nan: a non-finite stage shrinks the step
        if accepted:
            field.callback_accept_step(times.at_float(s), y, times.length * h)
            s, y, f0 = (1.0 if lands else s + h), y1, ks[-1]
        else:
            field.callback_reject_step(times.at_float(s), y, times.length * h)
        h *= _step_factor(ratio, accepted, pair.order)
    return y


def row_rms_norm(x: torch.Tensor) -> torch.Tensor:
    """The RMS of each row (dimension 0) of ``x``: per-row control's default error norm."""
    return x.to(controller_dtype(x)).flatten(1).pow(2).mean(1).sqrt()


def integrate_rows(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                   norm: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`integrate_embedded` with a controller per row of ``y0`` (dimension 0); return ``y(t1)``.

    ``norm`` maps an error of ``y0``'s shape to one value per row (default :func:`row_rms_norm`).
    Every row's fraction ``s``, step ``h``, accept/reject and step count are its own; the loop
    ends when every row reached ``t1``. One host read per step (all done? any underflow? the
    slowest row's time, the most steps of a row, the rows still stepping).
    ``field.stats`` receives the per-row accepted/rejected steps and the evaluations each row
    needed (``row_*``); its totals are the loop's.

    **Compaction** (``config.compact_rows``): once some rows are done, a step gathers the rows still
    stepping (their state, ``f0``, ``s``, ``h`` and the field's per-row inputs), evaluates the field
    on those rows only and scatters the committed rows back, so the work follows the sum of the
    rows' evaluations (``stats.row_evaluations``), not the slowest row's times the batch. Inside
    such a step :func:`~node_seq.ode.stats.evaluated_rows` names the rows: the field's state of the
    whole solve (frozen dropout masks) and ``norm`` (which then receives those rows' error) take
    those rows of theirs. An input whose dimension 0 is the batch's is per row (gathered once per
    change of the rows stepping), one of size 1 or a non-tensor is shared; a solve with any other
    input (a decoding cache's dict) is not compacted.
    """
    if y0.dim() == 0:
        raise ValueError("step control 'sequence' needs a state with rows (dimension 0 is the batch), got a 0-d state")
    pair = config.method_spec.pair
    norm = norm or row_rms_norm
    times = _Times(t0, t1, y0)
    rtol, atol = config.rtol, config.atol
    dtype = controller_dtype(y0)
    rows, device = y0.shape[0], y0.device
    shape = (-1,) + (1,) * (y0.dim() - 1)  # a per-row value broadcast over the row's state

    def row_norm(x: torch.Tensor) -> torch.Tensor:
        value = norm(x)
        if value.shape != x.shape[:1]:
            raise ValueError(f"step control 'sequence': the error norm must give one value per row, shape "
                             f"({x.shape[0]},), got {tuple(value.shape)}")
        return value.to(torch.float64)

    def slope(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return times.scale(field(times.at_rows(s).reshape(shape), y))

    def error_ratio(y, y1, ks, h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            err = _combine(None, ks, pair.error, h.to(dtype).reshape(shape), dtype=dtype)
            scale = torch.maximum(y.abs(), y1.abs()).to(dtype).mul_(rtol).add_(atol)
            return row_norm(err.div_(scale))

    s = torch.zeros(rows, dtype=torch.float64, device=device)
    y, f0 = y0, slope(s, y0)
    if config.first_step is None:
        h = _first_row_steps(slope, y0, f0, pair.order, rtol, atol, row_norm, s)
    else:
        h = torch.full((rows,), config.first_step / times.length, dtype=torch.float64, device=device)
    accepted_steps = torch.zeros(rows, dtype=torch.long, device=device)
    rejected_steps = torch.zeros_like(accepted_steps)
    moved = torch.zeros((), dtype=torch.long, device=device)  # loop steps in which some row moved on
    probes = 2 if config.first_step is None else 1  # f0, and Hairer's probe
    loop_steps = 0
    inputs = field.inputs
    per_row_inputs = _per_row_inputs(inputs, rows) if config.compacts else None
    evaluated = None  # the rows a step evaluates (indices), None for all of them
    try:
        while True:
            active = s < 1.0
            underflow = active & ~((h >= MIN_STEP_FRACTION) & (s + h > s))  # also a nan step
            # The step's one host read: all done? underflow? the last row's time, the most steps of a
            # row, the rows still stepping.
            done, underflowed, slowest, most_steps, stepping = torch.stack([
                ~active.any(), underflow.any(), torch.where(active, s, 1.0).min(),
                (accepted_steps + rejected_steps).max(), active.sum()]).tolist()
            field.stats.t_reached = times.at_float(slowest)
            if loop_steps:
                _count_loop_steps(field, loop_steps, int(moved), int(most_steps))
            if done:
                break
            if underflowed:
                raise field.on_limit("underflow")
            if per_row_inputs is not None and stepping < (rows if evaluated is None else len(evaluated)):
                evaluated = active.nonzero().squeeze(1)  # a second host read, only when a row finished
                field.inputs = tuple(x.index_select(0, evaluated) if gather else x
                                     for x, gather in zip(inputs, per_row_inputs))
            lands = s + h >= 1.0 - LANDING_SLACK
            h = torch.where(lands, 1.0 - s, h)
            y, f0, ratio = _step_rows(pair, slope, error_ratio, y, f0, s, h, active, lands, evaluated)
            accepted = ratio <= 1.0  # False for nan
            commit = accepted & active
            accepted_steps += commit
            rejected_steps += active & ~accepted
            moved += commit.any()
            loop_steps += 1
            s = torch.where(commit, torch.where(lands, 1.0, s + h), s)
            h = torch.where(active, h * _row_step_factors(ratio, accepted, pair.order), h)
    finally:
        field.inputs = inputs
    stats = field.stats
    stats.row_accepted, stats.row_rejected = accepted_steps, rejected_steps
    stats.row_nfe = (accepted_steps + rejected_steps) * (pair.stages - 1) + probes
    return y


def _step_rows(pair: EmbeddedPair, slope, error_ratio, y: torch.Tensor, f0: torch.Tensor, s: torch.Tensor,
               h: torch.Tensor, active: torch.Tensor, lands: torch.Tensor, evaluated: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of :func:`integrate_rows` on the rows ``evaluated`` (all rows if ``None``): the
    stages and each row's error ratio; return ``(y, f0, ratio)`` of the whole batch, a row's state
    and ``f0`` moved on where it is active and passed its error test, held exactly elsewhere. A row
    left out is done: its ratio (0) is never read."""
    pick = (lambda x: x) if evaluated is None else (lambda x: x.index_select(0, evaluated))
    y_rows, f0_rows, s_rows, h_rows, active_rows, lands_rows = map(pick, (y, f0, s, h, active, lands))
    step = torch.where(active_rows, h_rows, torch.zeros_like(h_rows))  # a finished row steps by nothing
    step_y = step.to(y.dtype).reshape((-1,) + (1,) * (y.dim() - 1))
    with rows_scope(evaluated):
        ks = [f0_rows]
        for node, coupling in zip(pair.nodes, pair.coupling):
            y_stage = _combine(y_rows, ks, coupling, step_y)
            at = torch.where(lands_rows, 1.0, s_rows + node * step) if node == 1.0 else s_rows + node * step
            ks.append(slope(torch.where(active_rows, at, s_rows), y_stage))
        ratio = error_ratio(y_rows, y_stage, ks, step)  # FSAL: the last stage is at the step's solution
    keep = ((ratio <= 1.0) & active_rows).reshape(step_y.shape)
    y_rows, f0_rows = torch.where(keep, y_stage, y_rows), torch.where(keep, ks[-1], f0_rows)
    if evaluated is None:
        return y_rows, f0_rows, ratio
    return (y.index_copy(0, evaluated, y_rows), f0.index_copy(0, evaluated, f0_rows),
            torch.zeros_like(s).index_copy(0, evaluated, ratio))


def _per_row_inputs(inputs: tuple, rows: int) -> tuple[bool, ...] | None:
    """Which of the field's inputs hold one entry per row (dimension 0 of size ``rows``) and are
    gathered with the rows a compacted step evaluates; ``None`` if one can be neither gathered nor
    shared (a dict, a tensor of another first size), so the solve must evaluate every row."""
    per_row = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == rows:
            per_row.append(True)
        elif x is None or isinstance(x, (bool, int, float, str)) or (isinstance(x, torch.Tensor)
                                                                      and (x.dim() == 0 or x.shape[0] == 1)):
            per_row.append(False)
        else:
            return None
    return tuple(per_row)


def _count_loop_steps(field: CountingField, steps: int, moved: int, most_steps: int) -> None:
    """The loop's steps so far in the totals (accepted: some row moved on), and the limit per row."""
    field.stats.num_accepted, field.stats.num_rejected, field.stats.num_steps = moved, steps - moved, steps
    if most_steps >= field.max_num_steps:
        raise field.on_limit("forward")


def _row_step_factors(ratio: torch.Tensor, accepted: torch.Tensor, order: int) -> torch.Tensor:
    """:func:`_step_factor` for every row at once."""
    floor = torch.where(accepted, 1.0, MAX_SHRINK).to(ratio.dtype)
    factor = (SAFETY * ratio.pow(-1.0 / order)).clamp(max=MAX_GROWTH)  # ratio 0: growth at most
    factor = torch.maximum(factor, floor).clamp(max=MAX_GROWTH)
    return torch.where(torch.isfinite(ratio), factor, torch.full_like(ratio, MAX_SHRINK))


def _first_row_steps(slope, y0: torch.Tensor, f0: torch.Tensor, order: int, rtol: float, atol: float, norm,
                     s: torch.Tensor) -> torch.Tensor:
    """:func:`_first_step` for every row at once (one probe evaluation for the batch)."""
    with torch.no_grad():
        scale = y0.abs().to(controller_dtype(y0)).mul_(rtol).add_(atol)
        d0, d1 = norm(y0 / scale), norm(f0 / scale)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        shape = (-1,) + (1,) * (y0.dim() - 1)
        f1 = slope(s + h0, y0 + h0.to(y0.dtype).reshape(shape) * f0)
        d2 = norm((f1.to(scale.dtype) - f0) / scale) / h0
        biggest = torch.maximum(d1, d2)
        h1 = torch.where(biggest <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6),
                         (0.01 / biggest.clamp_min(1e-300)) ** (1.0 / order))
    return torch.minimum(100 * h0, h1)


def _combine(y: torch.Tensor | None, ks: list[torch.Tensor], weights: tuple[float, ...], h: float | torch.Tensor,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """``y + h * sum(w_j k_j)`` (or the sum alone without ``y``, accumulated in ``dtype``), skipping
    zero weights. ``h`` is a number, or a step per row broadcastable to ``y``."""
    out = y
    for w, k in zip(weights, ks):
        if w == 0.0:
            continue
        if isinstance(h, torch.Tensor):
            term = (k if dtype is None else k.to(dtype)) * (h * w)
            out = term if out is None else out + term
        else:
            out = k.to(dtype) * (h * w) if out is None else out.add(k, alpha=h * w)
    return out


def _step_factor(ratio: float, accepted: bool, order: int) -> float:
    """The controller: aim at ratio 0.9 ** order, grow at most 10x, never shrink an accepted step."""
    if not math.isfinite(ratio):
        return MAX_SHRINK
    if ratio == 0.0:
        return MAX_GROWTH
    return min(MAX_GROWTH, max(SAFETY * ratio ** (-1.0 / order), 1.0 if accepted else MAX_SHRINK))


def _first_step(slope, y0: torch.Tensor, f0: torch.Tensor, order: int, rtol: float, atol: float, norm) -> float:
    """Hairer, Norsett and Wanner's starting step (Solving ODEs I, II.4), as a fraction of the
    interval: a size from ``|y0| / |f0|``, one Euler probe for the second derivative. One extra
    evaluation, no graph."""
    with torch.no_grad():
        scale = y0.abs().to(controller_dtype(y0)).mul_(rtol).add_(atol)
        d0, d1 = float(norm(y0 / scale)), float(norm(f0 / scale))
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = slope(h0, y0 + h0 * f0)
        d2 = float(norm((f1.to(scale.dtype) - f0) / scale)) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
    return min(100 * h0, h1)


class _Times:
    """Times of the interval ``[t0, t1]`` at fractions ``s``, as the 0-d tensors the field reads."""

    def __init__(self, t0, t1, y0: torch.Tensor):
        self.tensors = isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor)
        as_tensor = lambda t: torch.as_tensor(t, dtype=y0.dtype, device=y0.device).reshape(())  # noqa: E731
        self.t0, self.t1 = (as_tensor(t0), as_tensor(t1)) if self.tensors else (float(t0), float(t1))
        self.start = float(self.t0.detach()) if self.tensors else self.t0
        self.length = (float(self.t1.detach()) if self.tensors else self.t1) - self.start
        self.span = self.t1 - self.t0  # a tensor with the end points' graph, or a number
        self.dtype, self.device = y0.dtype, y0.device

    def at(self, s: float) -> torch.Tensor:
        if self.tensors:
            return self.t0 if s == 0.0 else self.t1 if s == 1.0 else self.t0 + self.span * s
        t = self.t1 if s == 1.0 else self.t0 + self.length * s
        return torch.tensor(t, dtype=self.dtype, device=self.device)

    def at_rows(self, s: torch.Tensor) -> torch.Tensor:
        """The time of each row at its fraction ``s`` (shape ``(rows,)``), in the state's dtype;
        exactly ``t1`` where ``s`` is one."""
        s = s.to(self.dtype)
        if self.tensors:
            return torch.where(s == 1.0, self.t1, self.t0 + self.span * s)
        return torch.where(s == 1.0, self.t1, self.t0 + self.length * s)

    def at_float(self, s: float) -> float:
        return self.start + self.length * s

    def scale(self, f: torch.Tensor) -> torch.Tensor:
        """``dy/ds = (t1 - t0) f``: free when the interval has length one and no graph."""
        if not self.tensors and self.length == 1.0:
            return f
        return f * self.span
