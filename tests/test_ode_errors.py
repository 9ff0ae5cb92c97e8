"""Bounded work and clear errors."""

import pytest
import torch
from torch import nn

from node_seq.ode import (
    MaxStepsExceeded, NonFiniteState, OptionError, SolverConfig, StepSizeUnderflow, parse_time_points, solve,
)
from ode_fields import Decay


class Stiff(nn.Module):
    def forward(self, t, y):
        return -1e6 * (y - torch.cos(t))


class BlowUp(nn.Module):
    def forward(self, t, y):
        return y * y * 1e3


def test_max_num_steps_names_method_tolerances_time_and_nfe():
    with pytest.raises(MaxStepsExceeded) as info:
        solve(Stiff(), torch.ones(2, dtype=torch.float64), method="dopri5", rtol=1e-6, atol=1e-8, max_num_steps=20)
    message = str(info.value)
    for part in ("max_num_steps exceeded", "method=dopri5", "rtol=1e-06", "atol=1e-08", "reached t=",
                 "function evaluations", "max_num_steps=20"):
        assert part in message
    assert info.value.nfe > 20 and 0 <= info.value.t_reached < 1


def test_max_num_steps_also_bounds_the_adjoint_backward_solve():
    field = Decay()
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    y1, stats = solve(field, y0, method="dopri5", rtol=1e-3, atol=1e-5, gradient="adjoint",
                      adjoint_rtol=1e-12, adjoint_atol=1e-14, max_num_steps=30)
    with pytest.raises(MaxStepsExceeded, match="backward"):
        y1.sum().backward()


def test_non_finite_state_raises_on_a_fixed_grid():
    """y' = 1e3 y^2 from y = 1 blows up at t = 1e-3, inside the first rk4 step: the grid runs on, and
    the state at t1 is inf/nan."""
    with pytest.raises(NonFiniteState) as info:
        solve(BlowUp(), torch.ones(2), t1=5.0, method="rk4", steps=50)
    assert str(info.value).startswith("the ODE state became non-finite (inf or nan) (method=rk4); reached t=unknown "
                                      "of t1=5 after 200 function evaluations")
    assert info.value.nfe == 50 * 4


def test_adaptive_steps_shrink_to_underflow_at_a_blow_up():
    """dopri5 cannot step past the blow-up at t = 1e-3: its step size underflows there."""
    with pytest.raises(StepSizeUnderflow) as info:
        solve(BlowUp(), torch.ones(2), t1=5.0, method="dopri5", max_num_steps=200)
    assert "the adaptive step size underflowed (method=dopri5, rtol=0.001, atol=0.0001)" in str(info.value)
    assert info.value.t_reached == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(method="rk5"), "method: unknown method 'rk5'; choose one of euler, midpoint, heun, rk4"),
    (dict(gradient="magic"), "gradient: unknown gradient mode 'magic'; choose one of backprop, checkpoint, adjoint, reversible"),
    (dict(rtol=-1.0, method="dopri5"), "rtol: must be a finite number > 0, got -1.0"),
    (dict(atol=0.0, method="dopri5"), "atol: must be a finite number > 0"),
    (dict(steps=0), "steps: must be an integer >= 1, got 0"),
    (dict(steps=2, step_size=0.1), "give either steps or step_size, not both"),
    (dict(method="dopri5", gradient="checkpoint"), "'checkpoint' needs a fixed-grid method"),
    (dict(method="rk4", gradient="reversible"), "gradient 'reversible' runs only euler, heun, reversible_heun"),
    (dict(t0=1.0, t1=1.0), "the time interval must be increasing"),
    (dict(max_num_steps=0), "max_num_steps: must be an integer >= 1"),
    (dict(method="rk4", gradient="checkpoint", checkpoint_snapshots=-1), "checkpoint_snapshots: must be an integer >= 0"),
    (dict(method="rk4", gradient="checkpoint", checkpoint_snapshots=True), "checkpoint_snapshots: must be an integer >= 0"),
    (dict(method="rk4", gradient="adjoint", checkpoint_snapshots=2),
     "checkpoint_snapshots: applies only to gradient 'checkpoint'"),
    (dict(method="reversible_heun", gradient="checkpoint", checkpoint_snapshots=2),
     "'reversible_heun' needs no snapshots: use gradient 'reversible'"),
])
def test_bad_options_fail_before_any_evaluation(kwargs, fragment):
    calls = []

    def field(t, y):
        calls.append(t)
        return y

    with pytest.raises(OptionError) as info:
        solve(field, torch.ones(1), **kwargs)
    assert fragment in str(info.value)
    assert calls == []


def test_front_ends_name_options_their_way():
    with pytest.raises(OptionError, match=r"^--node-rtol: must be a finite number > 0, got -0.1$"):
        SolverConfig(method="dopri5", rtol=-0.1).validate({"rtol": "--node-rtol"})


@pytest.mark.parametrize("text,expected", [("0,1", (0.0, 1.0)), ("[0, 2.5]", (0.0, 2.5)), ([1, 3], (1.0, 3.0))])
def test_parse_time_points(text, expected):
    assert parse_time_points(text) == expected


@pytest.mark.parametrize("text", ["1,0", "0", "0,1,2", "a,b", "0,inf"])
def test_parse_time_points_rejects(text):
    with pytest.raises(OptionError, match="^--node-ts: "):
        parse_time_points(text, "--node-ts")
