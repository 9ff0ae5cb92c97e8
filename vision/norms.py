"""Normalization and activation choices for the three places an ODENet normalizes.

"Towards Understanding Normalization in Neural ODEs" shows that the norm *inside* the ODE function
decides whether an ODENet trains (BN there: 76% on CIFAR-10, LN: 93%), so the stem, the ResNet
blocks and the ODE blocks each get their own choice. A spec reads ``stem-res-ode``:

* one part (``ln``) applies everywhere; two parts (``bn-ln``) give stem and ResNet blocks the first,
  ODE blocks the second; three parts name all three.
* each part is an output norm on what a conv produces (``bn``, ``ln``, ``none``), a weight norm on every conv/linear
  (``wn``, ``sn``), or both joined by ``+`` (``ln+wn``). ``nf`` is an alias of ``none``.

BN inside an ODE function shares running statistics across every time point and solver stage;
it is offered to reproduce the paper's failure, not as a default. (Its running statistics are at
least not updated a second time when a gradient mode recomputes the field during the backward
pass, as ANODE's checkpointing did: see :class:`ODEBatchNorm2d`.)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from node_seq.ode import OptionError, in_backward_solve

OUTPUT_NORMS = ("bn", "ln", "none")
WEIGHT_NORMS = ("wn", "sn", "none")
ACTIVATIONS = ("relu", "lrelu", "tanh", "softplus", "none")
NORM_PLACES = ("stem", "res", "ode")


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """What normalizes one place of the network."""

    output: str = "none"  # the norm of a conv's output: bn, ln or none
    weight: str = "none"  # the norm of its weight: wn, sn or none

    def __str__(self) -> str:
        parts = [p for p in (self.output, self.weight) if p != "none"]
        return "+".join(parts) or "none"


def parse_norm(spec: str, option: str = "norm") -> dict[str, NormSpec]:
    """``"bn-ln"`` -> ``{"stem": bn, "res": bn, "ode": ln}``; raises :class:`OptionError` if invalid."""
    if not isinstance(spec, str) or not spec.strip():
        raise OptionError(f"{option}: expected a string such as 'bn-ln', got {spec!r}")
    parts = [p.strip() for p in spec.lower().split("-")]
    if len(parts) > 3:
        raise OptionError(f"{option}: at most three '-'-separated parts (stem-res-ode), got {spec!r}")
    if len(parts) == 1:
        parts = parts * 3
    elif len(parts) == 2:
        parts = [parts[0], parts[0], parts[1]]
    return {place: _parse_part(part, spec, option) for place, part in zip(NORM_PLACES, parts)}


def _parse_part(part: str, spec: str, option: str) -> NormSpec:
    output, weight = "none", "none"
    for token in part.split("+"):
        token = "none" if token == "nf" else token
        if token in ("bn", "ln") and output == "none":
            output = token
        elif token in ("wn", "sn") and weight == "none":
            weight = token
        elif token != "none":
            raise OptionError(
                f"{option}: cannot read {token!r} in {spec!r}; each part is an output norm "
                f"({', '.join(OUTPUT_NORMS)}), a weight norm ({', '.join(WEIGHT_NORMS)}), or one of each "
                f"joined by '+' (e.g. 'ln+wn')")
    return NormSpec(output, weight)


class _StatsOnceMixin:
    """BN that leaves its running statistics alone while autograd recomputes the forward.

    ``checkpoint``, ``reversible`` and ``adjoint`` re-evaluate the vector field inside
    ``.backward()`` (the ODE core says when: :func:`node_seq.ode.in_backward_solve`); there the
    layer still normalizes with the batch statistics (so the recomputed values, and the
    gradients, equal the forward's) but does not count the batch twice.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and in_backward_solve():
            # the same call as the forward's (checkpointing checks that it saves the same tensors),
            # updating throwaway copies of the running statistics
            return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(), self.weight, self.bias,
                                True, 0.0, self.eps)
        return super().forward(x)


class ODEBatchNorm2d(_StatsOnceMixin, nn.BatchNorm2d):
    pass


class ODEBatchNorm1d(_StatsOnceMixin, nn.BatchNorm1d):
    pass


def output_norm(kind: str, channels: int, dims: int = 2, *, in_ode: bool = False) -> nn.Module:
    """The norm of a ``dims``-d conv's output: BatchNorm (``bn``), GroupNorm with one group (``ln``, a
    LayerNorm over channels and positions) or ``nn.Identity`` (``none``)."""
    if kind == "bn":
        if in_ode:
            return ODEBatchNorm2d(channels) if dims == 2 else ODEBatchNorm1d(channels)
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "ln":
        return nn.GroupNorm(1, channels)  # normalizes over (C, H, W) or (C, L): works for 1-d and 2-d convs
    if kind == "none":
        return nn.Identity()
    raise OptionError(f"norm: unknown output norm {kind!r}; choose one of {', '.join(OUTPUT_NORMS)}")


def weight_normed(module: nn.Module, kind: str) -> nn.Module:
    """``module`` with its weight reparametrized by weight norm or spectral norm (or unchanged)."""
    if kind == "wn":
        return parametrizations.weight_norm(module)
    if kind == "sn":
        return parametrizations.spectral_norm(module)
    if kind == "none":
        return module
    raise OptionError(f"norm: unknown weight norm {kind!r}; choose one of {', '.join(WEIGHT_NORMS)}")


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.1)
    if name == "tanh":
        return nn.Tanh()
    if name == "softplus":
        return nn.Softplus()
    if name == "none":
        return nn.Identity()
    raise OptionError(f"activation: unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
