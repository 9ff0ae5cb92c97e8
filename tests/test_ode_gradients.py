"""Gradients of every mode against float64 references: y0, parameters, each input, and time."""

import pytest
import torch
import torchdiffeq

from node_seq.ode import solve
from ode_fields import CrossAttentionField, Decay


def _problem():
    torch.manual_seed(1)
    field = CrossAttentionField()
    y0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    raw_memory = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    memory = raw_memory * 1.5  # a non-leaf, like an encoder output
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True  # padding
    return field, y0, raw_memory, memory, mask


def _grads(gradient, method, steps=None, **kw):
    field, y0, raw_memory, memory, mask = _problem()
    t1 = torch.tensor(1.0, dtype=torch.float64, requires_grad=gradient != "reversible")
    y1, _ = solve(field, y0, inputs=(memory, mask, 0.5), t1=t1, method=method, steps=steps,
                  gradient=gradient, **kw)
    weights = torch.linspace(-1, 1, y1.numel(), dtype=torch.float64).reshape(y1.shape)
    (y1 * weights).sum().backward()
    named = {"y0": y0.grad, "memory": raw_memory.grad, **{n: p.grad for n, p in field.named_parameters()}}
    if t1.requires_grad:
        named["t1"] = t1.grad
    return named


def _assert_all_close(got, want, rtol, atol):
    assert set(got) <= set(want)
    for name in got:
        assert got[name] is not None, f"no gradient for {name}"
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4", "reversible_heun"])
def test_checkpoint_equals_backprop(method):
    _assert_all_close(_grads("checkpoint", method, steps=3), _grads("backprop", method, steps=3), 1e-10, 1e-12)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("steps,snapshots", [(1, 0), (6, 0), (7, 1), (13, 2), (20, 3), (9, 20)])
def test_checkpoint_with_snapshots_equals_backprop(method, steps, snapshots):
    """Every binomial schedule (no snapshot at all, a few, more than steps) gives backprop's gradients."""
    got = _grads("checkpoint", method, steps=steps, checkpoint_snapshots=snapshots)
    _assert_all_close(got, _grads("backprop", method, steps=steps), 1e-10, 1e-12)


def test_reversible_heun_gradients_are_exact():
    reference = _grads("backprop", "reversible_heun", steps=6)
    reference.pop("t1")
    _assert_all_close(_grads("reversible", "reversible_heun", steps=6), reference, 1e-8, 1e-10)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_reversed_steps_gradients_converge(method):
    """Undoing euler/heun by stepping backwards is approximate; the error shrinks with the step."""
    def error(steps):
        got = _grads("reversible", method, steps=steps)
        want = _grads("backprop", method, steps=steps)
        return max(float((got[k] - want[k]).abs().max()) for k in got)

    coarse, fine = error(4), error(32)
    assert fine < coarse / 4
    assert fine < 0.05


@pytest.mark.parametrize("method,steps", [("rk4", 20), ("dopri5", None)])
def test_adjoint_matches_backprop_for_every_input(method, steps):
    kw = dict(rtol=1e-9, atol=1e-11) if steps is None else {}
    adjoint = _grads("adjoint", method, steps=steps, **kw)
    backprop = _grads("backprop", method, steps=steps, **kw)
    assert adjoint["memory"].abs().sum() > 0  # the field reads memory only through attention
    _assert_all_close(adjoint, backprop, 1e-5, 1e-7)


def test_adjoint_seminorm_gives_the_same_gradients_with_fewer_steps():
    def run(seminorm):
        field, y0, raw_memory, memory, mask = _problem()
        y1, stats = solve(field, y0, inputs=(memory, mask, 0.5), method="dopri5", rtol=1e-7, atol=1e-9,
                          gradient="adjoint", seminorm=seminorm)
        y1.square().sum().backward()
        return raw_memory.grad, stats.nfe_backward

    plain, nfe_plain = run(False)
    semi, nfe_semi = run(True)
    torch.testing.assert_close(semi, plain, rtol=1e-4, atol=1e-6)
    assert nfe_semi <= nfe_plain


def test_torchdiffeq_alone_drops_the_memory_gradient():
    """The bug node-seq exists to fix: odeint_adjoint ignores tensors the field closes over."""
    field, y0, raw_memory, memory, mask = _problem()
    ys = torchdiffeq.odeint_adjoint(lambda t, y: field(t, y, memory, mask, 0.5), y0,
                                    torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4",
                                    adjoint_params=tuple(field.parameters()))
    ys[-1].sum().backward()
    assert raw_memory.grad is None
    assert _grads("adjoint", "rk4", steps=4)["memory"] is not None


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_gradcheck(gradient):
    field = Decay(0.7)
    memory_free = lambda y0, t1: solve(field, y0, t1=t1, method="rk4", steps=3, gradient=gradient)[0]  # noqa: E731
    y0 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    t1 = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(memory_free, (y0, t1))


def test_time_gradient_is_the_vector_field_at_t1():
    """d y(t1) / d t1 = f(t1, y(t1)): the adjoint gets it from the continuous solution."""
    field = Decay(0.7)
    y0 = torch.tensor([0.4], dtype=torch.float64)
    t1 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    y1, _ = solve(field, y0, t1=t1, method="dopri5", rtol=1e-10, atol=1e-12, gradient="adjoint")
    y1.sum().backward()
    with torch.no_grad():
        expected = field(t1.detach(), y1.detach())
    torch.testing.assert_close(t1.grad, expected.sum(), rtol=1e-6, atol=1e-8)


class ProjectedMemoryField(CrossAttentionField):
    """Like a decoder layer: ``proj`` belongs to the field but is applied to the memory outside it."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4, dtype=torch.float64)


@pytest.mark.parametrize("gradient,method,tol", [("adjoint", "rk4", 1e-4), ("reversible", "reversible_heun", 1e-8),
                                                 ("checkpoint", "rk4", 1e-10)])
def test_parameters_used_outside_the_field_get_their_gradient_once(gradient, method, tol):
    def grads(mode):
        torch.manual_seed(2)
        field = ProjectedMemoryField()
        raw_memory = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
        y0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
        mask = torch.zeros(2, 5, dtype=torch.bool)
        for _ in range(2):  # two solves reading the same projected memory, as two decoder layers do
            y0, _ = solve(field, y0, inputs=(field.proj(raw_memory), mask, 0.5), method=method, steps=8,
                          gradient=mode)
        y0.square().sum().backward()
        return {"proj": field.proj.weight.grad, "memory": raw_memory.grad, "q": field.q.weight.grad}

    _assert_all_close(grads(gradient), grads("backprop"), tol, tol)
