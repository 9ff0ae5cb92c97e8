"""The torchdiffeq route: adaptive methods, and the continuous adjoint for any method.

torchdiffeq does the stepping; this module supplies what it lacks for sequence models:

* gradients for every tensor the vector field reads, not only the state and the parameters
  (``odeint_adjoint`` silently returns none for tensors it is not told about, which is how the
  published NODE-Transformer prototype never trained its encoder);
* bounded work with errors that say where the solve stood;
* separate forward/backward NFE and accepted/rejected step counts.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torchdiffeq

from .errors import StepSizeUnderflow
from .stats import CountingField

#: Our fixed-grid names, in torchdiffeq's words (its "rk4" is the 3/8 rule, as is ours).
TORCHDIFFEQ_NAMES = {"heun": "heun2"}


def _uniform_grid(steps: int) -> Callable:
    def grid(func, y0, t):
        return torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype, device=t.device)

    return grid


def integrate_torchdiffeq(field: CountingField, y0: torch.Tensor, *, t0, t1, method: str, steps: int | None,
                          rtol: float, atol: float, adjoint: bool, adjoint_rtol: float | None,
                          adjoint_atol: float | None, seminorm: bool, max_num_steps: int,
                          grad_tensors: Sequence[torch.Tensor], norm: Callable | None) -> torch.Tensor:
    """Solve with ``torchdiffeq.odeint`` (or ``odeint_adjoint``) and return the state at ``t1``."""
    t = _time_tensor(t0, t1, y0)
    # Fixed-grid solvers take no step callbacks (torchdiffeq warns): hand them the bare call.
    func = field if steps is None else field.__call__
    name = TORCHDIFFEQ_NAMES.get(method, method)
    if steps is not None:
        options: dict = {"grid_constructor": _uniform_grid(steps)}
    else:
        # Our own callbacks enforce max_num_steps with a better message; torchdiffeq's cap is a backstop.
        options = {"max_num_steps": max_num_steps + 1}
        if norm is not None:
            options["norm"] = norm
    try:
        if adjoint:
            adjoint_options = dict(options)
            adjoint_options.pop("norm", None)
            if seminorm and steps is None:
                adjoint_options["norm"] = "seminorm"
            ys = torchdiffeq.odeint_adjoint(
                func, y0, t, rtol=rtol, atol=atol, method=name, options=options,
                adjoint_rtol=adjoint_rtol if adjoint_rtol is not None else rtol,
                adjoint_atol=adjoint_atol if adjoint_atol is not None else atol,
                adjoint_method=name, adjoint_options=adjoint_options,
                adjoint_params=tuple(grad_tensors),
            )
        else:
            ys = torchdiffeq.odeint(func, y0, t, rtol=rtol, atol=atol, method=name, options=options)
    except AssertionError as error:
        if "underflow" in str(error):
            raise field.on_limit("underflow") from error
        raise
    if steps is not None:
        field.stats.num_steps += steps
        field.stats.num_accepted += steps
    return ys[-1]


def _time_tensor(t0, t1, y0: torch.Tensor) -> torch.Tensor:
    """``[t0, t1]`` as one tensor, keeping the graph of tensor end points (time gradients)."""
    if isinstance(t0, torch.Tensor) or isinstance(t1, torch.Tensor):
        return torch.stack([torch.as_tensor(t0, dtype=y0.dtype, device=y0.device).reshape(()),
                            torch.as_tensor(t1, dtype=y0.dtype, device=y0.device).reshape(())])
    return torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)


__all__ = ["integrate_torchdiffeq", "StepSizeUnderflow"]
