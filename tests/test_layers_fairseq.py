"""NODE layers against fairseq's own layers: one unit Euler step is fairseq's pre-norm layer."""

import argparse

import pytest
import torch

from layer_inputs import SPEC, euler, padded_batch
from node_seq.nn import NodeDecoderLayer, NodeEncoderLayer
from node_seq.nn.convert import from_fairseq_layer

fairseq_modules = pytest.importorskip("fairseq.modules")


def fairseq_args(**overrides):
    args = dict(encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=4,
                decoder_embed_dim=16, decoder_ffn_embed_dim=32, decoder_attention_heads=4,
                encoder_normalize_before=True, decoder_normalize_before=True, dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, activation_fn="relu")
    return argparse.Namespace(**{**args, **overrides})


@pytest.mark.parametrize("steps", [1, 3])
def test_euler_encoder_layer_is_a_tied_stack_of_fairseq_layers(steps):
    reference = fairseq_modules.TransformerEncoderLayer(fairseq_args()).eval()
    ours = NodeEncoderLayer(SPEC, euler(steps, t1=float(steps))).eval()
    ours.load_state_dict(from_fairseq_layer(reference.state_dict()))
    x, padding = padded_batch()
    expected = x.transpose(0, 1)
    for _ in range(steps):
        expected = reference(expected, encoder_padding_mask=padding)
    got = ours(x, padding)
    keep = ~padding
    torch.testing.assert_close(got[keep], expected.transpose(0, 1)[keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2])
def test_euler_decoder_layer_is_a_tied_stack_of_fairseq_layers(steps):
    reference = fairseq_modules.TransformerDecoderLayer(fairseq_args()).eval()
    ours = NodeDecoderLayer(SPEC, euler(steps, t1=float(steps))).eval()
    ours.load_state_dict(from_fairseq_layer(reference.state_dict()))
    encoder_out, encoder_padding = padded_batch()
    y = torch.randn(3, 5, 16)
    causal = torch.triu(torch.full((5, 5), float("-inf")), 1)
    expected = y.transpose(0, 1)
    for _ in range(steps):
        expected, _, _ = reference(expected, encoder_out.transpose(0, 1), encoder_padding, self_attn_mask=causal)
    got = ours(y, encoder_out, encoder_padding, self_attn_mask=causal)
    torch.testing.assert_close(got, expected.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_a_post_norm_plain_encoder_layer_is_fairseqs_post_norm_layer():
    reference = fairseq_modules.TransformerEncoderLayer(fairseq_args(encoder_normalize_before=False)).eval()
    ours = NodeEncoderLayer(SPEC, None, post_norm=True).eval()
    ours.load_state_dict(from_fairseq_layer(reference.state_dict()))
    x, padding = padded_batch()
    expected = reference(x.transpose(0, 1), encoder_padding_mask=padding).transpose(0, 1)
    keep = ~padding
    torch.testing.assert_close(ours(x, padding)[keep], expected[keep], rtol=1e-5, atol=1e-5)
    pre_norm = NodeEncoderLayer(SPEC, None).eval()
    pre_norm.load_state_dict(ours.state_dict())  # same weights, other placement: another function
    assert not torch.allclose(pre_norm(x, padding)[keep], expected[keep], atol=1e-3)


def test_a_post_norm_plain_decoder_layer_is_fairseqs_and_decodes_incrementally():
    reference = fairseq_modules.TransformerDecoderLayer(fairseq_args(decoder_normalize_before=False)).eval()
    ours = NodeDecoderLayer(SPEC, None, post_norm=True).eval()
    ours.load_state_dict(from_fairseq_layer(reference.state_dict()))
    encoder_out, encoder_padding = padded_batch()
    y = torch.randn(3, 5, 16)
    causal = torch.triu(torch.full((5, 5), float("-inf")), 1)
    expected, _, _ = reference(y.transpose(0, 1), encoder_out.transpose(0, 1), encoder_padding, self_attn_mask=causal)
    torch.testing.assert_close(ours(y, encoder_out, encoder_padding, self_attn_mask=causal), expected.transpose(0, 1),
                               rtol=1e-5, atol=1e-5)
    cache = {}
    steps = [ours(y[:, i:i + 1], encoder_out, encoder_padding, cache=cache) for i in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_only_a_plain_layer_can_be_post_norm():
    with pytest.raises(ValueError, match="post_norm: only a plain layer"):
        NodeEncoderLayer(SPEC, euler(1), post_norm=True)


@pytest.mark.parametrize("side", ["encoder", "decoder"])
def test_a_fresh_layer_is_initialised_as_fairseqs(side):
    """Every parameter has the distribution fairseq gives it (Xavier attention, ``nn.Linear``'s
    feed-forward, unit LayerNorms), so a plain baseline starts where fairseq's Transformer starts."""
    from node_seq.nn import LayerSpec

    torch.manual_seed(0)
    width, ffn = 512, 2048
    args = fairseq_args(**{f"{s}_{name}": value for s in ("encoder", "decoder")
                           for name, value in (("embed_dim", width), ("ffn_embed_dim", ffn))})
    reference_class = fairseq_modules.TransformerEncoderLayer if side == "encoder" else \
        fairseq_modules.TransformerDecoderLayer
    reference = from_fairseq_layer(reference_class(args).state_dict())
    ours_class = NodeEncoderLayer if side == "encoder" else NodeDecoderLayer
    ours = ours_class(LayerSpec(embed_dim=width, num_heads=4, ffn_dim=ffn, dropout=0.0), euler()).state_dict()
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        if expected.std() == 0:  # LayerNorms and zero biases: the exact values
            torch.testing.assert_close(ours[name], expected, msg=name)
        else:
            assert 0.85 < (ours[name].std() / expected.std()).item() < 1.15, name
            assert 0.9 < (ours[name].abs().max() / expected.abs().max()).item() < 1.1, name
