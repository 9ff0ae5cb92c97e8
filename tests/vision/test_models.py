"""Every registered model, norm, solver and gradient mode at tiny sizes."""

import dataclasses

import pytest
import torch

from node_seq.nn.options import VISION, NodeOptions
from node_seq.ode import FIXED_GRID_METHODS, OptionError, SolverConfig, Stage, stage_scope
from vision.models import (ODEBlock, PiecewiseField, ConvField, create_model, list_models, model_options,
                           piece_index)
from vision.norms import NormSpec, parse_norm

VECTOR_MODELS = ("simple_odenet",)


def tiny(name, **kwargs):
    shape = (3,) if name in VECTOR_MODELS else (2, 6, 6)
    kwargs.setdefault("width", 4)
    return create_model(name, num_classes=3, input_shape=shape, **kwargs), torch.randn(4, *shape)


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_a_step(name):
    model, x = tiny(name)
    model.set_solver(SolverConfig(method="rk4", steps=2))
    before = [p.detach().clone() for p in model.parameters()]
    out = model(x)
    assert out.shape == (4, 3)
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    stats = model.solve_stats()
    blocks = len(model.ode_blocks())
    assert stats.nfe_forward == blocks * 2 * 4  # 2 rk4 steps of 4 stages per block


@pytest.mark.parametrize("name", list_models())
def test_spec_rebuilds_the_same_model(name):
    model, x = tiny(name)
    model.eval()
    clone = create_model(model.spec["name"], **model.spec["kwargs"])
    for each in (model, clone):
        each.set_solver(SolverConfig(method="euler", steps=1))
    missing, unexpected = clone.load_state_dict(model.state_dict())
    assert not missing and not unexpected
    clone.eval()
    assert torch.equal(clone(x), model(x))


@pytest.mark.parametrize("name", list_models())
def test_a_model_built_without_a_solver_solves_with_the_default_options(name):
    """The vision options' default solver, its first step aside (the model's is Hairer's estimate)."""
    model, _ = tiny(name)
    solver = NodeOptions().solver(VISION)
    assert model.solver == dataclasses.replace(solver, first_step=None) and solver.method == "dopri5"


def test_unknown_model_and_option_name_the_allowed_values():
    with pytest.raises(OptionError, match="unknown model 'odenet5'.*odenet4"):
        create_model("odenet5")
    with pytest.raises(OptionError, match="no option 'depth'.*width"):
        create_model("odenet4", depth=3)
    assert "pieces" in model_options("continuousnet") and "pieces" not in model_options("odenet4")


@pytest.mark.parametrize("spec", ["bn", "ln", "none", "wn", "sn", "ln+wn", "bn-ln", "bn-bn", "bn-sn", "ln-bn-wn", "nf"])
def test_every_norm_trains(spec):
    model, x = tiny("odenet10", norm=spec)
    model.set_solver(SolverConfig(method="euler", steps=2))
    model(x).sum().backward()
    ode_part = parse_norm(spec)["ode"]
    field = model.ode_blocks()[0].func
    expected = {"bn": torch.nn.BatchNorm2d, "ln": torch.nn.GroupNorm, "none": torch.nn.Identity}[ode_part.output]
    assert isinstance(field.norm1, expected)
    assert hasattr(field.conv1, "parametrizations") == (ode_part.weight != "none")


def test_norm_spec_places():
    assert parse_norm("bn-ln") == {"stem": NormSpec("bn"), "res": NormSpec("bn"), "ode": NormSpec("ln")}
    assert parse_norm("ln+sn")["ode"] == NormSpec("ln", "sn")
    with pytest.raises(OptionError, match="cannot read 'gn'.*bn, ln, none.*wn, sn"):
        parse_norm("bn-gn")
    with pytest.raises(OptionError, match="at most three"):
        parse_norm("bn-bn-bn-bn")


@pytest.mark.parametrize("method", FIXED_GRID_METHODS + ("dopri5", "bosh3"))
def test_every_method_forward_backward(method):
    model, x = tiny("odenet4", norm="ln")
    steps = 3 if method in FIXED_GRID_METHODS else None
    model.set_solver(SolverConfig(method=method, steps=steps, rtol=1e-3, atol=1e-4))
    model(x).square().sum().backward()
    assert model.solve_stats().nfe_forward > 0
    assert all(p.grad is not None for p in model.parameters())


def _grads(model, x, solver):
    model.zero_grad()
    model.set_solver(solver)
    out = model(x)
    out.square().sum().backward()
    return out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]), model.solve_stats()


def _double(name, **kw):
    model, x = tiny(name, norm="ln", **kw)
    return model.double(), x.double()


@pytest.mark.parametrize("method,gradient", [("rk4", "checkpoint"), ("midpoint", "checkpoint"),
                                             ("reversible_heun", "reversible"), ("reversible_heun", "checkpoint")])
def test_exact_gradient_modes_match_backprop(method, gradient):
    model, x = _double("odenet4")
    base = SolverConfig(method=method, steps=4)
    out_b, g_b, _ = _grads(model, x, base)
    out_m, g_m, stats = _grads(model, x, dataclasses.replace(base, gradient=gradient))
    torch.testing.assert_close(out_m, out_b)
    torch.testing.assert_close(g_m, g_b, rtol=1e-7, atol=1e-9)
    assert stats.nfe_backward > 0  # the backward pass re-evaluated the field


def test_adjoint_matches_backprop_to_tolerance():
    model, x = _double("odenet4", activation="tanh")  # a smooth field keeps the adaptive solves short
    tight = SolverConfig(method="dopri5", rtol=1e-7, atol=1e-7)
    _, g_b, _ = _grads(model, x, tight)
    _, g_a, stats = _grads(model, x, dataclasses.replace(tight, gradient="adjoint"))
    assert stats.nfe_backward > 0
    torch.testing.assert_close(g_a, g_b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_approximate_reversible_gradient_improves_with_steps(method):
    """Reversing steps (Sander et al.) is approximate: its gradient error must shrink as h does."""
    model, x = _double("continuousnet", pieces=[1, 1, 1])
    errors = []
    for steps in (2, 16):
        solver = SolverConfig(method=method, steps=steps)
        _, g_b, _ = _grads(model, x, solver)
        _, g_r, _ = _grads(model, x, dataclasses.replace(solver, gradient="reversible"))
        errors.append(float((g_r - g_b).norm() / g_b.norm()))
    assert errors[1] < errors[0] / 2
    assert errors[1] < 0.05


def test_piecewise_field_uses_its_steps_piece():
    pieces = [ConvField(channels=2, norm=NormSpec(), act="relu", final_activation=False) for _ in range(4)]
    field = PiecewiseField(pieces)
    assert piece_index(torch.tensor(0.0), 4, None) == 0
    assert piece_index(torch.tensor(0.3), 4, None) == 1
    assert piece_index(torch.tensor(1.0), 4, None) == 3
    # rk4's last stage of step 1 (of 4) lands on t = 0.5 but belongs to piece 1, not 2
    with stage_scope(Stage(1, 3, 4, torch.tensor(0.5))):
        assert piece_index(torch.tensor(0.5), 4, 4) == 1
        assert piece_index(torch.tensor(0.5), 2, 4) == 0
    block = ODEBlock(field, SolverConfig(method="euler", steps=4))
    calls = []
    for k, piece in enumerate(field.pieces):
        piece.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
    block(torch.randn(1, 2, 3, 3))
    assert calls == [0, 1, 2, 3]



@pytest.mark.parametrize("gradient", ["checkpoint", "reversible"])
def test_bn_in_ode_counts_each_batch_once_when_recomputed(gradient):
    """Recomputing the field in the backward pass must change neither the gradient nor the BN stats."""
    method = "reversible_heun" if gradient == "reversible" else "euler"
    results = {}
    for mode in ("backprop", gradient):
        torch.manual_seed(1)
        model, x = tiny("odenet4", norm="bn")
        model = model.double()
        model.set_solver(SolverConfig(method=method, steps=3, gradient=mode))
        model(x.double()).square().sum().backward()
        bn = model.ode_blocks()[0].func.norm1
        results[mode] = (bn.running_mean.clone(), int(bn.num_batches_tracked),
                         torch.cat([p.grad.flatten() for p in model.parameters()]))
    (mean_b, count_b, grad_b), (mean_g, count_g, grad_g) = results["backprop"], results[gradient]
    assert count_g == count_b == (4 if method == "reversible_heun" else 3)  # one per forward evaluation
    torch.testing.assert_close(mean_g, mean_b)
    torch.testing.assert_close(grad_g, grad_b)
