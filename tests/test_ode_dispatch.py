"""``solve`` with a config: validated once, one integrator per gradient mode and method, and the
backward-solve context the field can read."""

import dataclasses

import pytest
import torch

from node_seq.ode import GRADIENTS, METHODS, OptionError, SolverConfig, in_backward_solve, solve
from node_seq.ode.solve import INTEGRATORS
from ode_fields import CrossAttentionField, Decay


def _problem():
    torch.manual_seed(0)
    field = CrossAttentionField()
    y0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    return field, y0, (memory, mask, 0.5)


@pytest.mark.parametrize("options", [
    dict(method="rk4", steps=3), dict(method="heun", step_size=0.3, gradient="checkpoint"),
    dict(method="euler", steps=4, gradient="reversible"), dict(method="dopri5", rtol=1e-5, atol=1e-7),
])
def test_the_config_form_is_the_keyword_form(options):
    field, y0, inputs = _problem()
    by_keyword, keyword_stats = solve(field, y0, inputs=inputs, t1=1.5, **options)
    by_config, config_stats = solve(field, y0, SolverConfig(t1=1.5, **options), inputs=inputs)
    assert torch.equal(by_config, by_keyword)
    assert config_stats == keyword_stats


def test_an_invalid_config_is_refused_before_any_evaluation_naming_the_option():
    calls = []

    def field(t, y):
        calls.append(t)
        return y

    with pytest.raises(OptionError, match=r"^steps: must be an integer >= 1, got 0$"):
        solve(field, torch.ones(1), SolverConfig(method="rk4", steps=0))
    with pytest.raises(OptionError, match=r"^gradient: 'checkpoint' needs a fixed-grid method"):
        solve(field, torch.ones(1), SolverConfig(method="dopri5", gradient="checkpoint"))
    assert calls == []


def test_a_config_is_validated_on_its_first_solve_only(monkeypatch):
    checks = []
    validate = SolverConfig.validate

    def counted(self, option_names=None):
        checks.append(self)
        return validate(self, option_names)

    monkeypatch.setattr(SolverConfig, "validate", counted)
    config = SolverConfig(method="rk4", steps=2)
    for _ in range(3):
        solve(Decay(), torch.ones(2, dtype=torch.float64), config)
    assert checks == [config]
    front_end = SolverConfig(method="euler", steps=2).validate({"steps": "--node-steps"})  # a front end's check
    solve(Decay(), torch.ones(2, dtype=torch.float64), front_end)
    assert checks == [config, front_end]
    changed = dataclasses.replace(config, steps=0)  # a new config: checked again, and refused
    with pytest.raises(OptionError, match="^steps: "):
        solve(Decay(), torch.ones(2, dtype=torch.float64), changed)


def test_keywords_that_restate_a_config_are_refused():
    field, y0, inputs = _problem()
    with pytest.raises(TypeError, match="not both"):
        solve(field, y0, SolverConfig(method="rk4"), inputs=inputs, steps=4)
    with pytest.raises(ValueError, match=r"t1=2.0 differs from the config's t1=1.0"):
        solve(field, y0, SolverConfig(method="rk4"), inputs=inputs, t1=torch.tensor(2.0, dtype=torch.float64))


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_a_config_with_tensor_end_points_gives_time_gradients(gradient):
    grads = []
    for with_config in (False, True):
        field, y0, inputs = _problem()
        t1 = torch.tensor(1.25, dtype=torch.float64, requires_grad=True)
        options = dict(method="rk4", steps=3, gradient=gradient)
        if with_config:
            y1, _ = solve(field, y0, SolverConfig(t1=1.25, **options), inputs=inputs, t1=t1)
        else:
            y1, _ = solve(field, y0, inputs=inputs, t1=t1, **options)
        y1.square().sum().backward()
        grads.append(t1.grad)
    assert grads[0] is not None and torch.equal(grads[0], grads[1])


def _mode_and_kind(config):
    mode = "checkpoint_snapshots" if config.checkpoint_snapshots is not None else config.gradient
    kind = "adaptive" if not config.is_fixed_grid else (
        "invertible" if config.method == "reversible_heun" else "learned" if config.is_learned else "runge_kutta")
    return mode, kind


def test_every_valid_config_has_an_integrator_and_every_integrator_a_config():
    reached = set()
    for method in METHODS:
        for gradient in GRADIENTS:
            for snapshots in (None, 2):
                config = SolverConfig(method=method, gradient=gradient, checkpoint_snapshots=snapshots)
                try:
                    config.validate()
                except OptionError:
                    continue
                assert _mode_and_kind(config) in INTEGRATORS, config
                reached.add(_mode_and_kind(config))
    assert reached == set(INTEGRATORS)


@pytest.mark.parametrize("method,gradient,snapshots,integrator", [
    ("euler", "backprop", None, "integrate"),
    ("reversible_heun", "backprop", None, "integrate"),
    ("rk4", "checkpoint", None, "integrate_checkpointed"),
    ("reversible_heun", "checkpoint", None, "integrate_checkpointed"),
    ("midpoint", "checkpoint", 1, "integrate_binomial"),
    ("rk4", "adjoint", None, "integrate_adjoint"),
    ("heun", "reversible", None, "integrate_reversed_steps"),
    ("reversible_heun", "reversible", None, "integrate_exact_reversal"),
    ("dopri5", "backprop", None, "integrate_adaptive"),
    ("bosh3", "adjoint", None, "integrate_adjoint"),
])
def test_each_gradient_mode_runs_its_integrator(monkeypatch, method, gradient, snapshots, integrator):
    ran = []
    for key, function in INTEGRATORS.items():
        def recorded(*args, _function=function, **kwargs):
            ran.append(_function.__name__)
            return _function(*args, **kwargs)
        monkeypatch.setitem(INTEGRATORS, key, recorded)
    field, y0, inputs = _problem()
    config = SolverConfig(method=method, steps=3 if method not in ("dopri5", "bosh3") else None, gradient=gradient,
                          checkpoint_snapshots=snapshots)
    y1, _ = solve(field, y0, config, inputs=inputs)
    y1.sum().backward()
    with torch.no_grad():  # nothing to differentiate: every mode is the plain forward solve
        solve(field, y0, config, inputs=inputs)
    assert ran == [integrator, "integrate_adaptive" if method in ("dopri5", "bosh3") else "integrate"]


@pytest.mark.parametrize("method,gradient,snapshots", [
    ("rk4", "backprop", None), ("rk4", "checkpoint", None), ("midpoint", "checkpoint", 1),
    ("reversible_heun", "checkpoint", None), ("euler", "reversible", None), ("reversible_heun", "reversible", None),
    ("rk4", "adjoint", None), ("dopri5", "adjoint", None),
])
def test_the_field_knows_when_it_runs_in_the_backward_pass(method, gradient, snapshots):
    """What a batch norm inside the field relies on to count each batch once."""
    seen = []

    class Recorder(CrossAttentionField):
        def forward(self, t, y, *inputs):
            seen.append(in_backward_solve())
            return super().forward(t, y, *inputs)

    torch.manual_seed(0)
    field, (y0, memory) = Recorder(), torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    config = SolverConfig(method=method, steps=None if method == "dopri5" else 4, gradient=gradient,
                          checkpoint_snapshots=snapshots)
    y1, stats = solve(field, y0, config, inputs=(memory, torch.zeros(2, 3, dtype=torch.bool), 0.5))
    assert seen == [False] * stats.nfe_forward and not in_backward_solve()
    y1.sum().backward()
    assert seen[stats.nfe_forward:] == [True] * stats.nfe_backward
    assert (stats.nfe_backward > 0) == (gradient != "backprop")
    assert not in_backward_solve()
