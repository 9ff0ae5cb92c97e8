"""NODE layers in plain torch: incremental decoding against full decoding, augmentation, time,
dropout, gradients and failure policies (fairseq's own layers: test_layers_fairseq.py)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from layer_inputs import SPEC, assert_incremental_equals_full, euler, padded_batch
from node_seq.nn import LayerSpec, NodeDecoderLayer, NodeEncoderLayer, reorder_cache
from node_seq.ode import SolverConfig


DECODERS = {
    "euler": dict(solver=SolverConfig(method="euler", steps=3)),
    "midpoint": dict(solver=SolverConfig(method="midpoint", steps=2)),
    "rk4": dict(solver=SolverConfig(method="rk4", steps=2)),
    "reversible_heun": dict(solver=SolverConfig(method="reversible_heun", steps=3)),
    "rk4-separated": dict(solver=SolverConfig(method="rk4", steps=1), separated=True),
    "rk4-augmented-time": dict(solver=SolverConfig(method="rk4", steps=1), augment_dims=4, time_dependent=True),
}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_incremental_decoding_equals_full_decoding(name):
    options = dict(DECODERS[name])
    layer = NodeDecoderLayer(SPEC, options.pop("solver"), **options).eval()
    assert_incremental_equals_full(layer, *padded_batch())


@pytest.mark.parametrize("name", ["rk4", "rk4-separated"])
def test_cached_decoding_of_several_positions_at_once_stays_causal(name):
    options = dict(DECODERS[name])
    layer = NodeDecoderLayer(SPEC, options.pop("solver"), **options).eval()
    encoder_out, _ = padded_batch()
    y = torch.randn(3, 6, 16)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    with torch.no_grad():
        full = layer(y, encoder_out, self_attn_mask=causal)
        cache: dict = {}
        chunks = [layer(y[:, :2], encoder_out, cache=cache), layer(y[:, 2:5], encoder_out, cache=cache),
                  layer(y[:, 5:], encoder_out, cache=cache)]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_adaptive_decoder_recomputes_the_prefix_exactly():
    """Adaptive steps depend on the whole sequence, so each new token re-solves its prefix: the
    result is what non-incremental decoding of that prefix gives."""
    layer = NodeDecoderLayer(SPEC, SolverConfig(method="dopri5", rtol=1e-4, atol=1e-6)).eval()
    encoder_out, encoder_padding = padded_batch()
    y = torch.randn(3, 5, 16)
    with torch.no_grad():
        cache: dict = {}
        for i in range(5):
            step = layer(y[:, i:i + 1], encoder_out, encoder_padding, cache=cache)
            causal = torch.triu(torch.ones(i + 1, i + 1, dtype=torch.bool), 1)
            prefix = layer(y[:, :i + 1], encoder_out, encoder_padding, self_attn_mask=causal)
            torch.testing.assert_close(step, prefix[:, -1:], rtol=1e-6, atol=1e-6)


def test_per_stage_cache_costs_one_solve_of_one_position():
    layer = NodeDecoderLayer(SPEC, SolverConfig(method="rk4", steps=2)).eval()
    encoder_out, _ = padded_batch()
    cache: dict = {}
    with torch.no_grad():
        for i in range(4):
            layer(torch.randn(3, 1, 16), encoder_out, cache=cache)
            assert layer.last_stats.nfe_forward == 8  # 2 steps x 4 stages, whatever the prefix length
    assert sorted(cache["stages"]) == list(range(8))
    assert all(k.shape[2] == 4 for k, _ in cache["stages"].values())


def test_cache_reordering_follows_beams():
    layer = NodeDecoderLayer(SPEC, SolverConfig(method="midpoint", steps=1)).eval()
    encoder_out, _ = padded_batch()
    y = torch.randn(3, 3, 16)
    order = torch.tensor([2, 2, 0])
    with torch.no_grad():
        cache: dict = {}
        for i in range(2):
            layer(y[:, i:i + 1], encoder_out, cache=cache)
        reorder_cache(cache, order)
        last = layer(y[order, 2:3], encoder_out[order], cache=cache)
        causal = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
        full = layer(y[order], encoder_out[order], self_attn_mask=causal)
    torch.testing.assert_close(last, full[:, 2:3], rtol=1e-5, atol=1e-5)


def test_augmented_layer_is_the_wider_layer_on_zero_padded_inputs_read_back_through_its_first_channels():
    """``--node-augment-dims 4``: the state gets 4 zero channels, the solve runs at width 20, and the
    projection back starts as "keep the first 16 channels" (``ChannelDrop``), so at init the layer's
    output is exactly what a plain-width-20 ODE layer with the same field gives on the padded input,
    cut to 16 channels; the extra channels do move during the solve, they are dropped afterwards."""
    augmented = NodeEncoderLayer(SPEC, euler(2), augment_dims=4).eval()
    wider = NodeEncoderLayer(dataclasses.replace(SPEC, embed_dim=20), euler(2)).eval()
    loaded = wider.load_state_dict(augmented.state_dict(), strict=False)
    assert (loaded.missing_keys, loaded.unexpected_keys) == ([], ["project.weight"])  # the same field
    x, padding = padded_batch()
    with torch.no_grad():
        out = augmented(x, padding)
        state = wider(F.pad(x, (0, 4)), padding)
        stacked = NodeEncoderLayer(SPEC, euler(), augment_dims=4).eval()(out, padding)  # back at width 16
    torch.testing.assert_close(out, state[..., :16], rtol=0, atol=0)
    assert state[..., 16:].abs().max() > 0.1
    assert stacked.shape == x.shape


def test_time_dependent_field_sees_t():
    layer = NodeEncoderLayer(SPEC, SolverConfig(method="rk4", steps=2), time_dependent=True).eval()
    x, padding = padded_batch()
    with torch.no_grad():
        before = layer(x, padding)
        # not a constant: the field reads x + t * w through LayerNorms, which ignore constant shifts
        layer.field.time.weight.copy_(torch.linspace(-1.0, 1.0, layer.field.time.weight.numel()))
        after = layer(x, padding)
    assert (before - after).abs().max() > 1e-2


def test_dropout_masks_are_frozen_for_the_whole_solve():
    """With dropout on, the adjoint integrates the same field as the forward solve."""
    spec = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.3, attention_dropout=0.2,
                     activation_dropout=0.1)
    x, padding = padded_batch()
    x = x.double()

    def grads(gradient):
        torch.manual_seed(5)
        layer = NodeEncoderLayer(spec, SolverConfig(method="rk4", steps=16, gradient=gradient)).double().train()
        inp = x.clone().requires_grad_()
        torch.manual_seed(7)
        layer(inp, padding).square().sum().backward()
        return inp.grad, layer.field.ffn.fc1.weight.grad

    backprop, adjoint = grads("backprop"), grads("adjoint")
    for a, b in zip(adjoint, backprop):
        # Continuous vs discrete adjoint: close, not equal. Masks redrawn per evaluation would put
        # the two an O(1) distance apart.
        assert (a - b).abs().max() < 0.01 * b.abs().max()


def test_gradient_reaches_encoder_output_through_a_node_decoder():
    for gradient in ("backprop", "checkpoint", "adjoint"):
        layer = NodeDecoderLayer(SPEC, SolverConfig(method="rk4", steps=2, gradient=gradient))
        encoder_out = torch.randn(3, 7, 16, requires_grad=True)
        causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
        layer(torch.randn(3, 4, 16), encoder_out, self_attn_mask=causal).sum().backward()
        assert encoder_out.grad is not None and encoder_out.grad.abs().sum() > 0, gradient


def _failing_layer(policy):
    from node_seq.nn.layers import FailurePolicy

    layer = NodeEncoderLayer(SPEC, SolverConfig(method="dopri5", rtol=1e-9, atol=1e-9, max_num_steps=2))
    layer.layer_name = "encoder.layers.0"
    layer.failure = FailurePolicy(policy, SolverConfig(method="midpoint", steps=3))
    return layer


def test_failure_policy_raise_names_the_layer():
    from node_seq.ode import MaxStepsExceeded

    x, padding = padded_batch()
    with pytest.raises(MaxStepsExceeded, match=r"^encoder\.layers\.0: max_num_steps exceeded \(method=dopri5, "
                                               r"rtol=1e-09, atol=1e-09\); reached t=.* max_num_steps=2"):
        _failing_layer("raise")(x, padding)


def test_failure_policy_fallback_redoes_the_solve_on_a_fixed_grid():
    layer = _failing_layer("fallback")
    x, padding = padded_batch()
    x.requires_grad_()
    out = layer(x, padding)
    out.sum().backward()
    assert layer.fallbacks == 1
    assert (layer.last_stats.method, layer.last_stats.nfe_forward) == ("midpoint", 6)
    assert torch.isfinite(out).all() and x.grad is not None
    reference = NodeEncoderLayer(SPEC, SolverConfig(method="midpoint", steps=3))
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(out, reference(x, padding))


def test_an_ode_layer_of_one_euler_step_stays_an_ode_layer():
    """Same numbers as the plain layer, but it is integrated: NFE counted, regularisers honoured."""
    from node_seq.nn import is_ode_layer

    ode = NodeEncoderLayer(SPEC, SolverConfig(method="euler", steps=1)).eval()
    plain = NodeEncoderLayer(SPEC, None).eval()
    plain.load_state_dict(ode.state_dict())
    x, padding = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(ode(x, padding), plain(x, padding))
    assert is_ode_layer(ode) and not is_ode_layer(plain)
    assert ode.last_stats.nfe_forward == 1 and plain.last_stats.nfe_forward == 0


def test_the_separated_self_attention_draws_fresh_dropout_masks_every_pass():
    """Outside the solve, nothing else resets its masks: a kept mask would drop the same units for
    every batch of a shape, and a pass would depend on the passes before it."""
    spec = dataclasses.replace(SPEC, dropout=0.3, attention_dropout=0.2)
    layer = NodeDecoderLayer(spec, SolverConfig(method="rk4", steps=1), separated=True).train()
    encoder_out, _ = padded_batch()
    y = torch.randn(3, 6, 16)
    causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)

    def run(seed):
        torch.manual_seed(seed)
        return layer(y, encoder_out, self_attn_mask=causal)

    first = run(0)
    assert not torch.allclose(run(1), first)
    torch.testing.assert_close(run(0), first, rtol=0, atol=0)
