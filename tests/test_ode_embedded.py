"""Our own dopri5/bosh3 loop (gradient backprop) and the first step of adaptive methods (issue #16).

What the loop may change is which steps it takes, never what it solves: every result here is held
to a tight-tolerance torchdiffeq reference in float64, and the gradients to references.
"""

from __future__ import annotations

import pytest
import torch
import torchdiffeq

from node_seq.ode import REGISTRY, SolverConfig, StepSizeUnderflow, solve

#: The methods our own adaptive loop runs (an embedded pair).
EMBEDDED = [name for name, method in REGISTRY.items() if method.pair is not None]

STAGES = {"dopri5": 6, "bosh3": 3}  # new evaluations per step (the first stage is the previous last)


class Rotation(torch.nn.Module):
    """A non-linear, time-dependent field with real dynamics over [0, 2]."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(scale * torch.randn(6, 6, generator=generator, dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.weight) * (1 + t)


def _reference(field, y0, t1):
    t = torch.tensor([0.0, t1], dtype=torch.float64)
    with torch.no_grad():
        return torchdiffeq.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")[-1]


@pytest.mark.parametrize("method", EMBEDDED)
@pytest.mark.parametrize("first_step", [None, 2.0, 0.3])
@pytest.mark.parametrize("rtol", [1e-3, 1e-6])
def test_the_solution_is_within_tolerance_of_a_tight_reference(method, first_step, rtol):
    field = Rotation()
    y0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y1, stats = solve(field, y0, method=method, rtol=rtol, atol=rtol / 100, t1=2.0, first_step=first_step)
    reference = _reference(field, y0, 2.0)
    # local error control over ~10-200 steps: the global error is a small multiple of the tolerance
    assert (y1 - reference).abs().max() <= 20 * (rtol / 100 + rtol * reference.abs().max())
    assert stats.nfe_forward == 1 + (first_step is None) + STAGES[method] * (stats.num_accepted + stats.num_rejected)
    assert stats.t_reached == 2.0


@pytest.mark.parametrize("method", EMBEDDED)
def test_as_accurate_as_torchdiffeq_at_the_same_tolerance(method):
    field = Rotation()
    y0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    reference = _reference(field, y0, 2.0)
    ours, _ = solve(field, y0, method=method, rtol=1e-5, atol=1e-7, t1=2.0)
    theirs = torchdiffeq.odeint(field, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-5, atol=1e-7,
                                method=method)[-1]
    assert (ours - reference).abs().max() <= 3 * (theirs - reference).abs().max() + 1e-9


def test_a_gentle_field_is_one_step_from_the_interval_and_several_from_the_estimate():
    """A near-identity layer (small field) passes the error test over the whole interval."""
    field = Rotation(scale=0.05)
    y0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    interval, first = solve(field, y0, method="dopri5", rtol=1e-2, atol=1e-4, first_step=1.0)
    estimate, from_estimate = solve(field, y0, method="dopri5", rtol=1e-2, atol=1e-4)
    assert (first.nfe_forward, first.num_accepted, first.num_rejected) == (7, 1, 0)
    assert from_estimate.num_accepted >= 2 and from_estimate.nfe_forward >= 2 + 6 * 2
    reference = _reference(field, y0, 1.0)
    for y in (interval, estimate):
        assert (y - reference).abs().max() <= 1e-4 + 1e-2 * reference.abs().max()


def test_a_rejected_first_step_shrinks_and_the_solve_still_meets_its_tolerance():
    field = Rotation(scale=3.0)
    y0 = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y1, stats = solve(field, y0, method="dopri5", rtol=1e-6, atol=1e-8, t1=2.0, first_step=2.0)
    assert stats.num_rejected >= 1
    reference = _reference(field, y0, 2.0)
    assert (y1 - reference).abs().max() <= 20 * (1e-8 + 1e-6 * reference.abs().max())


def test_a_first_step_longer_than_the_interval_is_the_interval():
    field = Rotation(scale=0.05)
    y0 = torch.ones(2, 6, dtype=torch.float64)
    short, stats = solve(field, y0, method="dopri5", rtol=1e-2, t1=0.5, first_step=10.0)
    assert (stats.nfe_forward, stats.num_accepted, stats.t_reached) == (7, 1, 0.5)
    assert torch.allclose(short, _reference(field, y0, 0.5), atol=1e-3)


def test_the_backward_pass_skips_the_last_fsal_evaluation():
    """y(t1) is the last step's own solution: f(t1, y1) only fed its error estimate, and
    torchdiffeq (which interpolates at t1 through every stage) backpropagates it."""
    backward_calls = []

    class Counted(Rotation):
        def forward(self, t, y):
            out = super().forward(t, y)
            if out.requires_grad:
                out.register_hook(lambda grad: backward_calls.append(1))
            return out

    field = Counted(scale=0.05)
    y0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    y1, stats = solve(field, y0, method="dopri5", rtol=1e-2, first_step=1.0)
    y1.sum().backward()
    assert stats.nfe_forward == 7 and len(backward_calls) == 6
    backward_calls.clear()
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torchdiffeq.odeint(field, y0, t, rtol=1e-2, atol=1e-4, options={"first_step": 1.0})[-1].sum().backward()
    assert len(backward_calls) == 7


@pytest.mark.parametrize("method,tol", [("dopri5", 1e-9), ("bosh3", 1e-7)])
def test_backprop_gradients_match_the_adjoint_at_tight_tolerance(method, tol):
    field = Rotation()
    y0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    grads = []
    for gradient in ("backprop", "adjoint"):
        y1, _ = solve(field, y0, method=method, rtol=tol, atol=tol / 100, gradient=gradient, max_num_steps=5000)
        grads.append(torch.autograd.grad(y1.square().sum(), (y0, field.weight)))
    for ours, adjoint in zip(*grads):
        torch.testing.assert_close(ours, adjoint, rtol=1000 * tol, atol=1000 * tol)


def test_gradcheck_of_one_accepted_step():
    """One step over the interval is a smooth function of y0 and the parameters: its gradient is exact."""
    y0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    weight = Rotation(scale=0.05).weight.detach().clone().requires_grad_()
    config = SolverConfig(method="dopri5", rtol=1e-2, first_step=1.0)

    def run(y, w):
        y1, stats = solve(lambda t, x: torch.tanh(x @ w) * (1 + t), y, config)
        assert stats.num_steps == 1
        return y1

    assert torch.autograd.gradcheck(run, (y0, weight))


def test_a_tensor_end_point_gets_the_field_at_t1_as_gradient():
    field = Rotation()
    y0 = torch.randn(3, 6, dtype=torch.float64)
    t1 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    y1, _ = solve(field, y0, t1=t1, method="dopri5", rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(y1.sum(), t1)
    with torch.no_grad():
        expected = field(torch.tensor(1.5, dtype=torch.float64), y1).sum()
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)


def test_a_non_finite_initial_state_underflows_after_a_few_rejections():
    y0 = torch.tensor([[1.0, float("nan")]])
    with pytest.raises(StepSizeUnderflow) as info:
        solve(lambda t, y: -y, y0, method="dopri5", max_num_steps=1000)
    assert info.value.nfe <= 1 + 6 * 25  # shrinking 5x per rejection, not a thousand rejections


def test_padding_does_not_steer_the_steps():
    """With the caller's norm over real positions, garbage at padded positions changes nothing."""
    keep = torch.tensor([[True, True, False]])[..., None].to(torch.float64)

    def norm(err):
        return ((keep * err.pow(2)).sum() / (keep.sum() * err.shape[-1])).sqrt()

    field = Rotation()
    y0 = torch.randn(1, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    noisy = y0.clone()
    noisy[:, 2] = 30 * torch.randn(6, dtype=torch.float64)
    clean, clean_stats = solve(field, y0, method="dopri5", rtol=1e-4, norm=norm, first_step=1.0)
    padded, padded_stats = solve(field, noisy, method="dopri5", rtol=1e-4, norm=norm, first_step=1.0)
    assert clean_stats.nfe_forward == padded_stats.nfe_forward
    assert torch.equal(clean[:, :2], padded[:, :2])


def test_first_step_is_for_adaptive_methods_and_positive():
    from node_seq.ode import OptionError

    with pytest.raises(OptionError, match="first_step: applies to adaptive methods only"):
        SolverConfig(method="rk4", first_step=1.0).validate()
    with pytest.raises(OptionError, match="first_step: must be a finite number > 0"):
        SolverConfig(method="dopri5", first_step=0.0).validate()


def test_the_adjoint_takes_the_first_step_too():
    field = Rotation(scale=0.05)
    y0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    _, interval = solve(field, y0, method="dopri5", rtol=1e-2, gradient="adjoint", first_step=1.0)
    _, estimate = solve(field, y0, method="dopri5", rtol=1e-2, gradient="adjoint")
    assert interval.nfe_forward < estimate.nfe_forward
