"""Adaptive solves under bfloat16 autocast (issue #27): the field runs in bfloat16, the state and the
step-size controller do not.

What ``Trainer(bf16=True)`` does on the CPU is ``torch.autocast("cpu", dtype=torch.bfloat16)``
around the forward pass: the field's linear layers return bfloat16, the state stays float32.
"""

from __future__ import annotations

import pytest
import torch
from layer_inputs import SPEC, padded_batch

from node_seq.nn import NodeEncoderLayer
from node_seq.nn.layers import padding_rms_norm
from node_seq.ode import REGISTRY, SolverConfig, solve

#: The methods our own adaptive loop runs (an embedded pair).
EMBEDDED = [name for name, method in REGISTRY.items() if method.pair is not None]


def bf16_autocast(enabled: bool = True):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


class Tanh(torch.nn.Module):
    """A small two-layer field: under autocast both layers return bfloat16."""

    def __init__(self, scale: float = 0.5, dim: int = 16):
        super().__init__()
        self.inner, self.outer = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y)))


class Recorded(torch.nn.Module):
    """The field, recording every state it is given and every value it returns."""

    def __init__(self, field):
        super().__init__()
        self.field, self.states, self.values = field, [], []

    def forward(self, t, y):
        out = self.field(t, y)
        self.states.append(y.detach())
        self.values.append(out.detach())
        return out


@pytest.mark.parametrize("method", EMBEDDED)
def test_the_error_estimate_sums_the_bf16_stages_in_float32(method):
    """The error estimate (stage values weighed by coefficients that add up to zero) equals the float64
    sum of the very bfloat16 stage values the field returned, to float32 rounding: summed in bfloat16
    it would be off by about 2**-8 of each term."""
    field, seen = Recorded(Tanh(scale=0.3)), []
    rtol, atol = 1e-2, 1e-3

    def norm(scaled_error):
        seen.append(scaled_error)
        return scaled_error.pow(2).mean().sqrt()

    y0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    with bf16_autocast():
        y1, stats = solve(field, y0, method=method, rtol=rtol, atol=atol, norm=norm, first_step=1.0)
    assert y1.dtype == torch.float32 and {y.dtype for y in field.states} == {torch.float32}  # float32 master state
    assert {k.dtype for k in field.values} == {torch.bfloat16}
    pair = REGISTRY[method].pair
    ks = field.values[:pair.stages]  # the first step: f0, then every stage (the last one at y1)
    step_end = field.states[pair.stages - 1].double()
    error = sum(w * k.double() for w, k in zip(pair.error, ks))  # h = 1: the whole interval
    expected = error / (atol + rtol * torch.maximum(y0.double().abs(), step_end.abs()))
    assert seen[0].dtype == torch.float32
    assert (seen[0].double() - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("method", EMBEDDED)
@pytest.mark.parametrize("first_step", [None, 1.0])
def test_bf16_autocast_accepts_as_many_steps_as_float32_give_or_take_one(method, first_step):
    field = Tanh()
    y0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    accepted = {}
    for bf16 in (False, True):
        with bf16_autocast(bf16):
            y1, stats = solve(field, y0, method=method, rtol=1e-3, atol=1e-4, first_step=first_step)
        accepted[bf16] = stats.num_accepted
        assert y1.dtype == torch.float32
    assert accepted[False] >= 3  # a problem with real dynamics, not one step either way
    assert abs(accepted[True] - accepted[False]) <= 1, accepted


@pytest.mark.parametrize("method", EMBEDDED)
@pytest.mark.parametrize("rtol", [1e-2, 1e-3])
def test_a_node_layer_under_bf16_autocast_takes_float32_steps_give_or_take_one(method, rtol):
    """The models' interval [0, 1] and their default tolerances (rtol 1e-3, atol 1e-4) or looser. (The
    bfloat16 stage values' own rounding is part of every error estimate: at tolerances near bfloat16's
    resolution, or over longer intervals, bfloat16 takes a few more, smaller steps.)"""
    torch.manual_seed(0)
    layer = NodeEncoderLayer(SPEC, SolverConfig(method=method, rtol=rtol, atol=rtol / 10)).eval()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))  # off its init: a field with real dynamics
    x, padding = padded_batch()
    outputs, accepted = {}, {}
    for bf16 in (False, True):
        with torch.no_grad(), bf16_autocast(bf16):
            outputs[bf16] = layer(x, padding)
        accepted[bf16] = layer.last_stats.num_accepted
    assert accepted[False] >= 3
    assert abs(accepted[True] - accepted[False]) <= 1, accepted
    assert outputs[True].dtype == torch.float32
    real = ~padding
    assert (outputs[True] - outputs[False])[real].abs().max() <= 0.05 * outputs[False][real].abs().max()


def test_a_bf16_state_is_carried_in_bf16_and_measured_in_float32():
    """A model cast to bfloat16 (not autocast) keeps its state in bfloat16; its error norm and
    tolerances are still float32."""
    field, seen = Tanh().to(torch.bfloat16), []

    def norm(scaled_error):
        seen.append(scaled_error.dtype)
        return scaled_error.pow(2).mean().sqrt()

    y0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y1, _ = solve(field, y0, method="dopri5", rtol=1e-2, atol=1e-3, norm=norm)
    assert y1.dtype == torch.bfloat16
    assert set(seen) == {torch.float32}


def test_padding_rms_norm_sums_a_bf16_error_in_float32():
    error = (1 + 1e-3 * torch.randn(4, 64, 16, generator=torch.Generator().manual_seed(2))).to(torch.bfloat16)
    keep = torch.ones(4, 64, dtype=torch.bool)
    keep[1, 40:] = False
    value = padding_rms_norm(keep)(error)
    real = error.double()[keep]
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), real.pow(2).mean().sqrt(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("gradient, method, options", [
    ("checkpoint", "rk4", {"steps": 4}),
    ("checkpoint", "rk4", {"steps": 4, "checkpoint_snapshots": 1}),
    ("reversible", "heun", {"steps": 4}),
    ("reversible", "reversible_heun", {"steps": 4}),
    ("adjoint", "rk4", {"steps": 4}),
    ("adjoint", "dopri5", {}),
])
def test_backward_passes_evaluate_the_field_under_the_forward_autocast(gradient, method, options):
    """Autocast is off inside ``.backward()``; a gradient mode that evaluates the field there re-enters
    the forward pass's settings, so it differentiates the bfloat16 field that ran (and reversible Heun
    rebuilds the states the forward pass went through)."""
    field = Recorded(Tanh())
    y0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with bf16_autocast():
        y1, stats = solve(field, y0, method=method, gradient=gradient, **options)
    forward_calls = len(field.values)
    y1.square().sum().backward()
    assert len(field.values) > forward_calls  # the backward pass evaluated the field again
    assert {k.dtype for k in field.values[forward_calls:]} == {torch.bfloat16}
    assert y0.grad.dtype == torch.float32 and bool(torch.isfinite(y0.grad).all())
