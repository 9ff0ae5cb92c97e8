"""The decoder layer without cross-attention (a decoder-only LM's layer): what it owns, that one unit
Euler step is fairseq's pre-norm LM layer, and that cached decoding equals full decoding."""

import pytest
import torch

from layer_inputs import SPEC, assert_incremental_equals_full, euler
from node_seq.nn import NodeDecoderLayer, NodeOptions
from node_seq.nn.convert import from_fairseq_layer
from node_seq.nn.factory import decoder_layer
from node_seq.ode import SolverConfig

SOLVERS = {
    "euler2": euler(2), "rk4": SolverConfig(method="rk4", steps=1), "midpoint": SolverConfig(method="midpoint", steps=2),
    "rk2_gated": SolverConfig(method="rk2_gated", steps=1), "pc": SolverConfig(method="pc", steps=1),
    "plain": None,
}


def lm_layer(solver, **options):
    return NodeDecoderLayer(SPEC, solver, cross_attention=False, **options).eval()


def test_a_layer_without_cross_attention_owns_no_encoder_attention():
    names = {name for name, _ in lm_layer(euler()).named_parameters()}
    with_cross = {name for name, _ in NodeDecoderLayer(SPEC, euler()).named_parameters()}
    assert not any("encoder_attn" in name for name in names)
    assert names == {name for name in with_cross if "encoder_attn" not in name}


def test_the_factory_builds_it_for_no_encoder_dim():
    layer = decoder_layer(SPEC, NodeOptions(method="rk4"), encoder_dim=None)
    assert not layer.cross_attention and layer.field.encoder_attn is None
    plain = decoder_layer(SPEC, NodeOptions(decoder=False), encoder_dim=None)
    assert plain.solver is None and plain.field.encoder_attn is None


@pytest.mark.parametrize("name, separated", [(name, separated) for name in sorted(SOLVERS)
                                              for separated in (False, True)
                                              if not (separated and SOLVERS[name] is None)])  # plain: never separated
def test_incremental_decoding_equals_full_decoding(name, separated):
    layer = lm_layer(SOLVERS[name], separated=separated)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    assert_incremental_equals_full(layer, None, None)


def test_adaptive_layer_recomputes_the_prefix_exactly():
    """An adaptive solve's steps depend on the whole sequence: each new token re-solves its prefix,
    which is what decoding that prefix at once gives."""
    layer = lm_layer(SolverConfig(method="dopri5", rtol=1e-4, atol=1e-6))
    y = torch.randn(3, 5, 16)
    with torch.no_grad():
        cache: dict = {}
        for i in range(5):
            step = layer(y[:, i:i + 1], None, cache=cache)
            causal = torch.triu(torch.ones(i + 1, i + 1, dtype=torch.bool), 1)
            torch.testing.assert_close(step, layer(y[:, :i + 1], None, self_attn_mask=causal)[:, -1:],
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2])
def test_euler_layer_is_a_tied_stack_of_fairseq_lm_layers(steps):
    fairseq_modules = pytest.importorskip("fairseq.modules")
    import argparse

    args = argparse.Namespace(decoder_embed_dim=16, decoder_ffn_embed_dim=32, decoder_attention_heads=4,
                              decoder_normalize_before=True, dropout=0.0, attention_dropout=0.0,
                              activation_dropout=0.0, activation_fn="relu")
    reference = fairseq_modules.TransformerDecoderLayer(args, no_encoder_attn=True).eval()
    ours = lm_layer(euler(steps, t1=float(steps)))
    ours.load_state_dict(from_fairseq_layer(reference.state_dict()))
    y = torch.randn(3, 5, 16)
    causal = torch.triu(torch.full((5, 5), float("-inf")), 1)
    expected = y.transpose(0, 1)
    for _ in range(steps):
        expected, _, _ = reference(expected, None, None, self_attn_mask=causal)
    torch.testing.assert_close(ours(y, None, self_attn_mask=causal), expected.transpose(0, 1), rtol=1e-5, atol=1e-5)
