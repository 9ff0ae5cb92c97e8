"""Mixed precision in the ODE core: what stays float32 under autocast, and autocast replayed by backward passes.

Under ``torch.autocast`` the vector field returns bfloat16 (or float16); the solver's own arithmetic
does not have to follow it. The state keeps the dtype it came with (float32 in the models), and the
adaptive controller measures errors in at least float32 (:func:`controller_dtype`).
"""

from __future__ import annotations

import dataclasses

import torch


def controller_dtype(y: torch.Tensor) -> torch.dtype:
    """The dtype of error estimates and norms: the state's, but never below float32."""
    return torch.promote_types(y.dtype, torch.float32)


@dataclasses.dataclass(frozen=True)
class AutocastState:
    """The autocast settings a forward solve ran under.

    Autocast is off while ``.backward()`` runs. A gradient mode that evaluates the field again there
    (checkpoint recomputation, reversible reconstruction, the adjoint's backward solve) re-enters
    these settings, so it differentiates the field the forward pass ran: exactly, as reversible
    Heun's reconstruction needs, and at the forward pass's cost.
    """

    device_type: str
    enabled: bool
    dtype: torch.dtype

    @classmethod
    def current(cls, device: torch.device) -> "AutocastState":
        return cls(device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))

    def __call__(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)
