"""Errors raised by a solve that cannot finish.

Each carries what a user needs to act on it: which method and tolerances were in use, how far the
solve got and how many function evaluations it spent, so a log line alone tells what went wrong.
"""

from __future__ import annotations


class ODESolveError(RuntimeError):
    """A solve stopped before reaching ``t1``."""

    reason = "the solve failed"

    def __init__(
        self,
        *,
        method: str,
        rtol: float | None,
        atol: float | None,
        t_reached: float | None,
        t1: float,
        nfe: int,
        detail: str = "",
        where: str | None = None,
    ):
        self.method, self.rtol, self.atol = method, rtol, atol
        self.t_reached, self.t1, self.nfe, self.where, self.detail = t_reached, t1, nfe, where, detail
        tol = f", rtol={rtol:g}, atol={atol:g}" if rtol is not None and atol is not None else ""
        reached = "unknown" if t_reached is None else f"{t_reached:.6g}"
        prefix = f"{where}: " if where else ""
        message = (
            f"{prefix}{self.reason} (method={method}{tol}); reached t={reached} of t1={t1:.6g} "
            f"after {nfe} function evaluations"
        )
        super().__init__(message + (f". {detail}" if detail else ""))

    def in_layer(self, where: str) -> "ODESolveError":
        """The same error, its message prefixed with the name of the layer that raised it."""
        return type(self)(
            method=self.method, rtol=self.rtol, atol=self.atol, t_reached=self.t_reached,
            t1=self.t1, nfe=self.nfe, detail=self.detail, where=where,
        )


class MaxStepsExceeded(ODESolveError):
    reason = "max_num_steps exceeded"


class StepSizeUnderflow(ODESolveError):
    reason = "the adaptive step size underflowed"


class NonFiniteState(ODESolveError):
    reason = "the ODE state became non-finite (inf or nan)"
