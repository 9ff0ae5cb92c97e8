"""Property-based tests: random shapes, padding and options."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node_seq.nn import LayerSpec, NodeDecoderLayer, NodeEncoderLayer
from node_seq.ode import METHODS, GRADIENTS, OptionError, SolverConfig

SPEC = LayerSpec(embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0)


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(1, 6), pad=st.lists(st.integers(0, 5), min_size=3, max_size=3),
       method=st.sampled_from(["euler", "midpoint", "rk4", "dopri5"]), seed=st.integers(0, 2 ** 16))
def test_padding_never_leaks_into_real_positions(batch, length, pad, method, seed):
    """Changing what sits in padded positions changes nothing at real positions."""
    torch.manual_seed(seed)
    layer = NodeEncoderLayer(SPEC, SolverConfig(method=method, steps=2 if method != "dopri5" else None,
                                                rtol=1e-4, atol=1e-6)).double().eval()
    padding = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        padding[b, length - min(pad[b], length - 1):] = True  # at least one real position per row
    x = torch.randn(batch, length, 8, dtype=torch.float64)
    noisy = x.masked_fill(padding[..., None], 0.0) + 100 * torch.randn_like(x) * padding[..., None]
    with torch.no_grad():
        a, b = layer(x, padding), layer(noisy, padding)
    assert torch.isfinite(a).all()
    tol = 1e-9 if method != "dopri5" else 1e-5  # the adaptive norm ignores padding; roundoff aside
    torch.testing.assert_close(a[~padding], b[~padding], rtol=tol, atol=tol)


@settings(max_examples=8, deadline=None)
@given(length=st.integers(1, 5), source=st.integers(1, 5), seed=st.integers(0, 2 ** 16))
def test_decoder_is_causal(length, source, seed):
    """A position's output never depends on later target positions."""
    torch.manual_seed(seed)
    layer = NodeDecoderLayer(SPEC, SolverConfig(method="rk4", steps=2)).double().eval()
    y = torch.randn(2, length, 8, dtype=torch.float64)
    memory = torch.randn(2, source, 8, dtype=torch.float64)
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
    changed = y.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        a, b = layer(y, memory, self_attn_mask=causal), layer(changed, memory, self_attn_mask=causal)
    torch.testing.assert_close(a[:, :-1], b[:, :-1], rtol=1e-12, atol=1e-12)


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3))


@settings(max_examples=200, deadline=None)
@given(method=st.one_of(st.sampled_from(METHODS), st.text(max_size=6)),
       gradient=st.one_of(st.sampled_from(GRADIENTS), st.text(max_size=6)),
       steps=st.one_of(st.none(), st.integers(-2, 4)), step_size=st.one_of(st.none(), numbers),
       rtol=numbers, atol=numbers, t0=numbers, t1=numbers, max_num_steps=st.integers(-1, 50))
def test_any_option_combination_is_either_valid_or_named_in_the_error(method, gradient, steps, step_size, rtol, atol,
                                                                      t0, t1, max_num_steps):
    config = SolverConfig(method=method, gradient=gradient, steps=steps, step_size=step_size, rtol=rtol, atol=atol,
                          t0=t0, t1=t1, max_num_steps=max_num_steps)
    try:
        config.validate()
    except OptionError as error:
        field = str(error).split(":", 1)[0]
        assert field in {"method", "gradient", "steps", "step_size", "rtol", "atol", "t1", "max_num_steps"}
        return
    assert method in METHODS and gradient in GRADIENTS and t1 > t0 and math.isfinite(t1 - t0)
    assert rtol > 0 and atol > 0
