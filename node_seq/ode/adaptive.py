"""The torchdiffeq route: adaptive methods, and the continuous adjoint for any method.

torchdiffeq does the stepping; this module supplies what it lacks for sequence models:

* gradients for every tensor the vector field reads, not only the state and the parameters
  (``odeint_adjoint`` silently returns none for tensors it is not told about, which is how the
  published NODE-Transformer prototype never trained its encoder);
* bounded work with errors that say where the solve stood;
* separate forward/backward NFE and accepted/rejected step counts.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torchdiffeq

from .config import OptionError, SolverConfig
from .embedded import integrate_embedded, integrate_rows
from .precision import AutocastState
from .stats import _CONTEXT, CountingField

def _uniform_grid(steps: int) -> Callable:
    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype, device=t.device)

    return grid


class _AdjointSolve(torch.autograd.Function):
    """``odeint_adjoint`` on detached copies of every input, its gradients handed back once.

    ``solve_on`` runs torchdiffeq on leaf tensors (the state, the time points and the field's
    inputs, see :meth:`CountingField.detach_inputs`); the backward pass asks that graph for the
    gradients of exactly those leaves and of the parameters, and returns them to the originals.
    """

    @staticmethod
    def forward(ctx, solve_on, leaves, num_params, y0, t, *tensors):
        y0_leaf = y0.detach().requires_grad_(y0.requires_grad)
        t_leaf = t.detach().requires_grad_(t.requires_grad)
        with torch.enable_grad():
            y1 = solve_on(y0_leaf, t_leaf)
        ctx.graph = (y1, [y0_leaf, t_leaf, *tensors[:num_params], *leaves])
        ctx.autocast = AutocastState.current(y0.device)
        return y1.detach()

    @staticmethod
    def backward(ctx, grad_y1):
        y1, wrt = ctx.graph
        del ctx.graph
        wanted = [x for x in wrt if x.requires_grad]
        with ctx.autocast():  # the backward solve evaluates the field as the forward solve did
            found = iter(torch.autograd.grad(y1, wanted, grad_y1, allow_unused=True))
        grads = [next(found) if x.requires_grad else None for x in wrt]
        return (None, None, None, *grads)


#: How dopri5 and bosh3 are stepped: by our own loop (:mod:`.embedded`), or by torchdiffeq's.
LOOPS = ("own", "torchdiffeq")


@contextlib.contextmanager
def adaptive_loop(loop: str) -> Iterator[None]:
    """Step dopri5 and bosh3 by ``loop`` in the solves inside the block: ``"torchdiffeq"`` is how
    they ran before issue #16 (its loop and its first-step estimate), kept so that a benchmark can
    compare the two (``benchmarks.adaptive_path``); ``"own"`` is the default."""
    if loop not in LOOPS:
        raise OptionError(f"adaptive_loop: loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    previous, _CONTEXT.loop = _CONTEXT.loop, loop
    try:
        yield
    finally:
        _CONTEXT.loop = previous


def integrate_adaptive(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                       norm: Callable | None = None) -> torch.Tensor:
    """An adaptive solve differentiated by autograd through its steps: the methods with an embedded
    ``pair`` by our own loop (:mod:`.embedded`: fewer evaluations, none of them wasted on the backward
    pass; :func:`adaptive_loop` may route them through torchdiffeq's instead), the others by
    ``torchdiffeq.odeint``. Per-row control (``step_control="sequence"``) is our loop's only, so
    ``adaptive_loop("torchdiffeq")`` refuses it (its norm is one value per row, torchdiffeq's one)."""
    if config.method_spec.pair is not None and _CONTEXT.loop == "own":
        return (integrate_rows if config.per_row else integrate_embedded)(field, y0, config, t0, t1, norm)
    if config.per_row:
        raise OptionError(f"adaptive_loop('torchdiffeq'): torchdiffeq's loop controls the whole batch at once; "
                          f"solve {config.method!r} with step_control='batch' (--node-step-control batch) there")
    return _odeint(field, y0, config, t0, t1, norm, adjoint=False)


def integrate_adjoint(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1,
                      norm: Callable | None = None) -> torch.Tensor:
    """Any method (adaptive, or a fixed grid) with torchdiffeq's continuous adjoint, its gradients
    reaching every input the field reads."""
    return _odeint(field, y0, config, t0, t1, norm, adjoint=True)


def _odeint(field: CountingField, y0: torch.Tensor, config: SolverConfig, t0, t1, norm: Callable | None, *,
            adjoint: bool) -> torch.Tensor:
    """Solve with ``torchdiffeq.odeint`` (or ``odeint_adjoint``) and return the state at ``t1``."""
    rtol, atol = config.rtol, config.atol
    steps = config.grid_steps if config.is_fixed_grid else None
    t = _time_tensor(t0, t1, y0)
    # Fixed-grid solvers take no step callbacks (torchdiffeq warns): hand them the bare call.
    func = field if steps is None else field.__call__
    name = config.method_spec.torchdiffeq
    if steps is not None:
        options: dict = {"grid_constructor": _uniform_grid(steps)}
    else:
        # Our own callbacks enforce max_num_steps with a better message; torchdiffeq's cap is a backstop.
        options = {"max_num_steps": config.max_num_steps + 1}
        if config.first_step is not None:
            options["first_step"] = min(config.first_step, config.t1 - config.t0)
        if norm is not None:
            options["norm"] = norm
    try:
        if adjoint:
            params = field.trainable_parameters()
            adjoint_options = dict(options)
            adjoint_options.pop("norm", None)
            if config.seminorm and steps is None:
                adjoint_options["norm"] = "seminorm"
            originals, leaves = field.detach_inputs()

            def solve_on(y0_leaf, t_leaf):
                return torchdiffeq.odeint_adjoint(
                    func, y0_leaf, t_leaf, rtol=rtol, atol=atol, method=name, options=options,
                    adjoint_rtol=config.adjoint_rtol if config.adjoint_rtol is not None else rtol,
                    adjoint_atol=config.adjoint_atol if config.adjoint_atol is not None else atol,
                    adjoint_method=name, adjoint_options=adjoint_options,
                    adjoint_params=(*params, *leaves),
                )[-1]

            return _AdjointSolve.apply(solve_on, leaves, len(params), y0, t, *params, *originals)
        return torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=name, options=options)[-1]
    except AssertionError as error:
        if "underflow" in str(error):
            raise field.on_limit("underflow") from error
        raise


def _time_tensor(t0, t1, y0: torch.Tensor) -> torch.Tensor:
    """``[t0, t1]`` as one tensor, keeping the graph of tensor end points (time gradients)."""
    if isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor):
        return torch.stack([torch.as_tensor(t0, dtype=y0.dtype, device=y0.device).reshape(()),
                            torch.as_tensor(t1, dtype=y0.dtype, device=y0.device).reshape(())])
    return torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)

