"""Kinetic-energy and Jacobian-norm regularisation: the integrals against closed forms, their gradients
across modes."""

import math

import pytest
import torch
from torch import nn

from node_seq.ode.regularization import solve_with_regularizers
from ode_fields import CrossAttentionField


class LinearDecay(nn.Module):
    """dx/dt = -k x: x(t) = x0 exp(-kt), so the energy is mean(x0^2) (1 - exp(-2k)) / (2k) over [0, 1]."""

    def __init__(self, k: float):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, t, x):
        return -self.k * x


@pytest.mark.parametrize("method,kw", [("rk4", {"steps": 64}), ("dopri5", {"rtol": 1e-10, "atol": 1e-12})])
def test_energy_of_a_linear_decay_matches_the_closed_form(method, kw):
    x0 = torch.randn(3, 5, 8, dtype=torch.float64)
    k = 1.7
    y, integrals, _ = solve_with_regularizers(LinearDecay(k), x0, method=method, **kw)
    torch.testing.assert_close(y, x0 * math.exp(-k))
    torch.testing.assert_close(integrals["kinetic"], x0.pow(2).mean(-1) * k * k * (1 - math.exp(-2 * k)) / (2 * k))


def test_a_constant_velocity_gives_its_square_times_the_interval_even_on_one_euler_step():
    class Constant(nn.Module):
        def forward(self, t, x):
            return torch.full_like(x, 3.0)

    _, integrals, _ = solve_with_regularizers(Constant(), torch.zeros(2, 4), method="euler", t0=0.5, t1=2.0)
    torch.testing.assert_close(integrals["kinetic"], torch.full((2,), 9.0 * 1.5))


def _regularized_grads(mode, method, name):
    """Gradients of y(t1) plus one regulariser's integral, for every tensor that reaches the solve."""
    torch.manual_seed(0)
    field = CrossAttentionField()
    x0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    raw_memory = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    torch.manual_seed(1)  # the same Hutchinson noise in every mode
    y, integrals, _ = solve_with_regularizers(field, x0, kinetic=name == "kinetic", jacobian=name == "jacobian",
                                              inputs=(raw_memory * 1.5, mask, 0.5), method=method,
                                              steps=8 if method == "rk4" else None, gradient=mode,
                                              rtol=1e-9, atol=1e-10)
    (y.sum() + 3 * integrals[name].sum()).backward()
    return {"x0": x0.grad, "memory": raw_memory.grad, **{n: p.grad for n, p in field.named_parameters()}}


def _assert_grads_match(got, want, rtol, atol):
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("gradient,method", [("checkpoint", "rk4"), ("adjoint", "rk4"), ("adjoint", "dopri5")])
def test_energy_gradients_of_every_mode_match_backprop(gradient, method):
    # checkpointing is the same discrete gradient; the continuous adjoint on a fixed grid differs by
    # the grid's discretisation error
    rtol, atol = (1e-9, 1e-10) if gradient == "checkpoint" else (1e-4, 1e-6)
    _assert_grads_match(_regularized_grads(gradient, method, "kinetic"), _regularized_grads("backprop", method, "kinetic"),
                        rtol, atol)


def test_a_layers_energy_is_averaged_over_real_positions_only():
    from node_seq.nn.layers import LayerSpec, NodeEncoderLayer
    from node_seq.ode import SolverConfig

    torch.manual_seed(0)
    layer = NodeEncoderLayer(LayerSpec(embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0), SolverConfig(method="rk4"))
    layer.regularizers = ("kinetic", "jacobian")
    x = torch.randn(1, 5, 8)
    torch.manual_seed(1)
    layer(x)
    alone = layer.last_regularizers
    padded = torch.cat([x, torch.randn(1, 3, 8)], dim=1)
    mask = torch.tensor([[False] * 5 + [True] * 3])
    torch.manual_seed(1)  # the same Hutchinson noise on the real positions
    layer(padded, mask)
    assert set(alone) == {"kinetic", "jacobian"}
    torch.testing.assert_close(layer.last_regularizers["kinetic"], alone["kinetic"])
    layer.eval()
    layer(x)
    assert layer.last_regularizers == {}  # training-only terms


def test_a_layers_jacobian_term_backpropagates_through_its_attention():
    # The term's second derivative needs the math attention kernel: the layer asks for it
    # (node_seq.nn.attention.twice_differentiable), the ODE core knows nothing of attention.
    from node_seq.nn.layers import LayerSpec, NodeEncoderLayer
    from node_seq.ode import SolverConfig

    layer = NodeEncoderLayer(LayerSpec(embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0), SolverConfig(method="rk4"))
    layer.regularizers = ("jacobian",)
    x = torch.randn(2, 5, 8, requires_grad=True)
    y = layer(x)
    (y.sum() + layer.last_regularizers["jacobian"].sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


class Rotation(nn.Module):
    """f(x) = s x Q^T with Q orthogonal: |eps^T df/dx|^2 = s^2 |eps|^2 for every eps, exactly."""

    def __init__(self, dim: int, scale: float):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
        self.weight = nn.Parameter(scale * q)

    def forward(self, t, x):
        return x @ self.weight.T


@pytest.mark.parametrize("method,kw", [("euler", {}), ("rk4", {"steps": 3}), ("dopri5", {"rtol": 1e-8, "atol": 1e-9})])
def test_jacobian_norm_of_a_scaled_rotation_is_exact(method, kw):
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 6, dtype=torch.float64)
    _, integrals, _ = solve_with_regularizers(Rotation(6, 0.7), x0, kinetic=True, jacobian=True, method=method,
                                              t1=2.0, **kw)
    # Rademacher noise has |eps|^2 = width, so the per-channel mean of the integrand is s^2
    torch.testing.assert_close(integrals["jacobian"], torch.full((2, 3), 0.49 * 2.0, dtype=torch.float64))
    assert integrals["kinetic"].shape == (2, 3) and (integrals["kinetic"] > 0).all()


@pytest.mark.parametrize("gradient,method", [("checkpoint", "rk4"), ("adjoint", "rk4")])
def test_jacobian_norm_gradients_of_every_mode_match_backprop(gradient, method):
    rtol, atol = (1e-9, 1e-10) if gradient == "checkpoint" else (1e-3, 1e-5)
    _assert_grads_match(_regularized_grads(gradient, method, "jacobian"),
                        _regularized_grads("backprop", method, "jacobian"), rtol, atol)
