"""Every method against an ODE with a known solution; NFE counts; the stage the field sees."""

import math

import pytest
import torch

from node_seq.ode import ADAPTIVE_METHODS, FIXED_GRID_METHODS, REGISTRY, current_stage, solve
from ode_fields import Decay

#: The methods whose step is a Butcher tableau: ``stages`` evaluations per step, no more.
TABLEAU_METHODS = [m for m in FIXED_GRID_METHODS if REGISTRY[m].scheme.kind == "runge_kutta"]


@pytest.mark.parametrize("method", FIXED_GRID_METHODS)
def test_fixed_grid_convergence_order(method):
    """The registry's order of every fixed grid is the order its errors shrink with."""
    y0 = torch.tensor([0.7], dtype=torch.float64)
    exact = Decay.exact(0.7, 2.0)
    errors = []
    for steps in (16, 32, 64):
        y1, _ = solve(Decay(), y0, t1=2.0, method=method, steps=steps)
        errors.append(abs(y1.item() - exact))
    observed = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(o - REGISTRY[method].order) < 0.3 for o in observed), (method, observed)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_adaptive_methods_meet_tolerance(method):
    y0 = torch.tensor([0.7], dtype=torch.float64)
    loose, _ = solve(Decay(), y0, t1=2.0, method=method, rtol=1e-3, atol=1e-5, max_num_steps=10_000)
    tight, stats = solve(Decay(), y0, t1=2.0, method=method, rtol=1e-6, atol=1e-8, max_num_steps=10_000)
    exact = Decay.exact(0.7, 2.0)
    assert abs(tight.item() - exact) < 1e-4
    assert abs(tight.item() - exact) < abs(loose.item() - exact) + 1e-12
    assert stats.num_accepted > 0 and stats.num_steps == stats.num_accepted + stats.num_rejected


def test_step_size_gives_the_matching_grid():
    y0 = torch.ones(2, dtype=torch.float64)
    by_size, stats = solve(Decay(), y0, t1=2.0, method="rk4", step_size=0.25)
    by_count, _ = solve(Decay(), y0, t1=2.0, method="rk4", steps=8)
    assert stats.num_steps == 8
    torch.testing.assert_close(by_size, by_count, rtol=0, atol=0)


@pytest.mark.parametrize("method", TABLEAU_METHODS)
def test_fixed_grid_nfe_forward_and_backward(method):
    y0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    _, backprop = solve(Decay(), y0, method=method, steps=4, gradient="backprop")
    y1, checkpointed = solve(Decay(), y0, method=method, steps=4, gradient="checkpoint")
    assert backprop.nfe_forward == checkpointed.nfe_forward == 4 * REGISTRY[method].stages
    y1.sum().backward()
    assert backprop.nfe_backward == 0
    assert checkpointed.nfe_backward == 4 * REGISTRY[method].stages  # each step recomputed once


def test_reversible_heun_costs_one_evaluation_per_step():
    y0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y1, stats = solve(Decay(), y0, method="reversible_heun", steps=5, gradient="reversible")
    assert stats.nfe_forward == 6
    y1.sum().backward()
    assert stats.nfe_backward > 0


def test_counts_do_not_leak_between_solves():
    field = Decay()
    y0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y_train, train = solve(field, y0, method="rk4", steps=2, gradient="checkpoint")
    with torch.no_grad():
        _, validation = solve(field, y0, method="rk4", steps=3, gradient="checkpoint")
    y_train.sum().backward()
    assert (train.nfe_forward, train.nfe_backward) == (8, 8)
    assert (validation.nfe_forward, validation.nfe_backward) == (12, 0)


def test_stats_add_up():
    y0 = torch.ones(1, dtype=torch.float64)
    _, a = solve(Decay(), y0, method="euler", steps=3)
    _, b = solve(Decay(), y0, method="rk4", steps=2)
    total = a + b
    assert (total.nfe_forward, total.num_steps) == (11, 5)


def test_field_sees_stage_index_and_time():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, t, y):
            stage = current_stage()
            seen.append((stage.step, stage.stage, stage.index, round(float(stage.t), 6), round(float(t), 6)))
            return -y

    solve(Recorder(), torch.ones(1), t0=1.0, t1=2.0, method="midpoint", steps=2)
    assert seen == [(0, 0, 0, 1.0, 1.0), (0, 1, 1, 1.25, 1.25), (1, 0, 2, 1.5, 1.5), (1, 1, 3, 1.75, 1.75)]
    assert current_stage() is None


def test_adjoint_on_a_fixed_grid_defaults_to_one_step():
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    y1, stats = solve(Decay(), y0, method="rk4", gradient="adjoint")
    y1.sum().backward()
    assert (stats.nfe_forward, stats.num_steps) == (4, 1)


def test_stage_times_first_built_under_inference_mode_still_serve_training():
    """The grid's times are cached across solves; the cache must not hand out inference tensors."""
    class TimeScaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

        def forward(self, t, y):
            return y * (self.w * t)  # t is saved for w's gradient

    field = TimeScaled()
    with torch.inference_mode():
        solve(field, torch.ones(3, dtype=torch.float64), method="midpoint", steps=3, t1=0.7)
    y1, _ = solve(field, torch.ones(3, dtype=torch.float64), method="midpoint", steps=3, t1=0.7)
    y1.sum().backward()
    assert field.w.grad is not None and float(field.w.grad) > 0


def test_finite_states_whose_sum_overflows_are_not_reported_as_non_finite():
    big = torch.full((8,), 3e38)  # finite in float32, but their sum is not
    y1, _ = solve(lambda t, y: torch.zeros_like(y), big, method="euler")
    assert torch.equal(y1, big)
