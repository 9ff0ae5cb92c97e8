"""The ODE Transformer's blocks (rk4_classic, and the learned rk2_gated and pc) in the HF model and
through a fairseq checkpoint converted to it: cached decoding, weights, loading, parity, refusals."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration
from node_seq.ode import OptionError

from hf_helpers import SOURCE, TINY, both_outputs, fairseq_side, tiny_model

MASK = SOURCE.ne(1)
TARGET = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10], [2, 11, 12, 13]])
METHODS = ("rk2_gated", "pc", "rk4_classic")
#: Weights a learned block adds to each ODE layer of width d.
EXTRA = {"rk2_gated": lambda d: 2 * d + 1, "pc": lambda d: 6 * d + 2, "rk4_classic": lambda d: 0}


@pytest.mark.parametrize("method", METHODS)
def test_cached_decoding_equals_uncached_decoding(method):
    model = tiny_model(node_method=method, node_steps=2)
    assert model.config.use_cache  # a fixed grid: the per-stage cache is on by default
    with torch.no_grad():
        full = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET).logits
        out = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET[:, :1], use_cache=True)
        steps = [out.logits]
        for i in range(1, TARGET.shape[1]):
            out = model(encoder_outputs=(out.encoder_last_hidden_state,), attention_mask=MASK,
                        decoder_input_ids=TARGET[:, i:i + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    for search in (dict(num_beams=1), dict(num_beams=3)):
        runs = [model.generate(SOURCE, attention_mask=MASK, max_new_tokens=6, use_cache=use_cache, **search)
                for use_cache in (True, False)]
        assert runs[0].shape[1] > 2 and torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("method", METHODS)
def test_the_model_has_the_plain_weights_plus_the_coefficients(method):
    def count(model):
        return sum(p.numel() for p in model.parameters())

    layers = TINY["encoder_layers"] + TINY["decoder_layers"]
    assert count(tiny_model(node_method=method)) == count(tiny_model(node_method="heun")) + layers * EXTRA[method](16)
    one_side = tiny_model(node_method=method, node_decoder=False)  # plain decoder layers learn no block
    assert count(one_side) == count(tiny_model(node_method="heun")) + TINY["encoder_layers"] * EXTRA[method](16)


@pytest.mark.parametrize("method", ["rk2_gated", "pc"])
def test_save_and_reload_keep_the_coefficients(method, tmp_path):
    model = tiny_model(node_method=method, node_steps=2)
    names = [name for name, _ in model.named_parameters() if ".coefficients." in name]
    assert names and all(name.startswith(("model.encoder.layers.", "model.decoder.layers.")) for name in names)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, strict=True).eval()  # refuses missing or unused weights
    with torch.no_grad():
        want = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET).logits
        got = loaded(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
@pytest.mark.parametrize("method", ["rk2_gated", "pc"])
def test_training_reaches_the_coefficients(method, gradient):
    model = tiny_model(node_method=method, node_steps=2, node_gradient=gradient).train()
    loss = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET, labels=TARGET).loss
    loss.backward()
    for name, parameter in model.named_parameters():
        if ".coefficients." in name:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    nfe = model.last_nfe
    per_step = 2 if method == "rk2_gated" else 3
    assert nfe.encoder.nfe_forward == TINY["encoder_layers"] * 2 * per_step
    assert model.nfe_backward == (model.last_nfe.nfe_forward if gradient == "checkpoint" else 0)


@pytest.mark.parametrize("gradient", ["adjoint", "reversible"])
@pytest.mark.parametrize("method", ["rk2_gated", "pc"])
def test_the_config_refuses_gradients_a_learned_block_cannot_have(method, gradient):
    with pytest.raises(OptionError, match=rf"^node_gradient: '{gradient}' cannot differentiate the learned block "
                                          rf"'{method}'.*use 'backprop' or 'checkpoint'"):
        NodeTransformerConfig(**TINY, node_method=method, node_gradient=gradient)


def test_the_config_refuses_the_adjoint_for_rk4_classic_and_the_regularisers_for_learned_blocks():
    with pytest.raises(OptionError, match=r"^node_method: gradient 'adjoint' integrates with torchdiffeq, which has "
                                          r"no classic RK4"):
        NodeTransformerConfig(**TINY, node_method="rk4_classic", node_gradient="adjoint")
    with pytest.raises(OptionError, match=r"^node_kinetic_weight: the regularisers are integrals"):
        NodeTransformerConfig(**TINY, node_method="pc", node_kinetic_weight=0.1)


# ---------------------------------------------------------------------------------------------
# a fairseq checkpoint, converted


@pytest.mark.slow
def test_a_converted_learned_block_gives_fairseqs_logits_and_tokens(learned_run):
    from fairseq.sequence_generator import SequenceGenerator

    fairseq_model, task = fairseq_side(learned_run)
    model = AutoModelForSeq2SeqLM.from_pretrained(learned_run.hf).eval()
    assert isinstance(model, NodeTransformerForConditionalGeneration)
    fairseq_weights = {key: value for key, value in fairseq_model.state_dict().items() if ".coefficients." in key}
    hf_weights = model.state_dict()
    assert len(fairseq_weights) == len([key for key in hf_weights if ".coefficients." in key]) > 0
    for key, value in fairseq_weights.items():
        assert torch.equal(hf_weights["model." + key], value), key
    trained = [key for key in fairseq_weights if key.endswith(("alpha", "gate_linear.bias"))]
    assert trained and all(fairseq_weights[key].ne(0.5 if key.endswith("alpha") else 0.0).all() for key in trained)

    encoder, expected, out, sample = both_outputs(fairseq_model, model, task, 8)
    net = sample["net_input"]
    torch.testing.assert_close(out.encoder_last_hidden_state, encoder, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-5)

    generator = SequenceGenerator([fairseq_model], task.target_dictionary, beam_size=1, max_len_a=0, max_len_b=8,
                                  min_len=1)
    with torch.no_grad():
        hypotheses = generator.generate([fairseq_model], sample)  # fairseq's incremental decoding
        generated = model.generate(input_ids=net["src_tokens"], attention_mask=net["src_tokens"].ne(1), num_beams=1,
                                   max_len_b=8)
    for row in range(8):
        tokens = generated[row, 1:].tolist()
        assert tokens[: tokens.index(2) + 1] == hypotheses[row][0]["tokens"].tolist(), row
