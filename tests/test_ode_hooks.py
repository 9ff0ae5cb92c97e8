"""The ODE core's public hooks for benchmarks: observing every field evaluation, and choosing the
step loop of dopri5 and bosh3; both change nothing outside their block."""

import pytest
import torch
import torchdiffeq

from node_seq.ode import OptionError, SolverConfig, adaptive_loop, observe_evaluations, solve
from ode_fields import CrossAttentionField


def _problem():
    torch.manual_seed(0)
    field = CrossAttentionField()
    y0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    return field, y0, (memory, torch.zeros(2, 5, dtype=torch.bool), 0.5)


@pytest.mark.parametrize("options", [dict(method="dopri5", rtol=1e-4, atol=1e-6),
                                     dict(method="rk4", steps=3, gradient="checkpoint")])
def test_a_hook_sees_every_evaluation_forward_and_backward_and_changes_nothing(options):
    field, y0, inputs = _problem()
    plain, plain_stats = solve(field, y0, inputs=inputs, **options)
    plain.sum().backward()
    plain_grad = y0.grad.clone()
    y0.grad = None

    seen = []

    def hook(func, t, y, *args):
        seen.append(args == inputs)  # the field's own inputs reach the hook
        return func(t, y, *args)

    with observe_evaluations(hook):
        observed, stats = solve(field, y0, inputs=inputs, **options)
    observed.sum().backward()  # after the block: the solve chose its hook when it started
    assert torch.equal(observed, plain) and torch.equal(y0.grad, plain_grad)
    assert stats == plain_stats and all(seen)
    assert len(seen) == stats.nfe_forward + stats.nfe_backward > stats.nfe_forward * (options["method"] == "rk4")

    solve(field, y0, inputs=inputs, **options)  # started outside the block: not observed
    assert len(seen) == stats.nfe_forward + stats.nfe_backward


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_the_torchdiffeq_loop_is_torchdiffeq_odeint(method):
    field, y0, inputs = _problem()
    config = SolverConfig(method=method, rtol=1e-4, atol=1e-6).validate()
    options = {} if config.first_step is None else {"first_step": config.first_step}
    expected = torchdiffeq.odeint(lambda t, y: field(t, y, *inputs), y0, torch.tensor([0.0, 1.0], dtype=y0.dtype),
                                  rtol=config.rtol, atol=config.atol, method=method, options=options)[-1]
    own, own_stats = solve(field, y0, config, inputs=inputs)
    with adaptive_loop("torchdiffeq"):
        theirs, _ = solve(field, y0, config, inputs=inputs)
    assert torch.equal(theirs, expected)
    assert not torch.equal(own, theirs)  # two loops
    assert torch.allclose(own, theirs, rtol=1e-3, atol=1e-4)  # the same ODE, to the same tolerances
    again, again_stats = solve(field, y0, config, inputs=inputs)  # after the block: our loop again
    assert torch.equal(again, own) and again_stats == own_stats


def test_an_unknown_loop_is_refused_naming_the_choices():
    with pytest.raises(OptionError, match="adaptive_loop: loop must be one of own, torchdiffeq, got 'fast'"):
        with adaptive_loop("fast"):
            pass
