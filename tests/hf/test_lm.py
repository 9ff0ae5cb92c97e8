"""The HF language model (``node_transformer_lm``): Auto classes, every ``generate`` mode through the
per-stage cache equal to uncached decoding, save/load, conversion from fairseq with the same logits
and tokens, and bad configs and checkpoints refused naming the field or the converter."""

import argparse
import re

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from node_seq.hf import NodeCache, NodeTransformerForCausalLM, NodeTransformerLMConfig, NodeTransformerLMModel
from node_seq.nn.options import HF_LM, NodeOptions, options_of
from node_seq.ode import OptionError

TINY_LM = dict(vocab_size=40, decoder_embed_dim=16, decoder_ffn_dim=32, decoder_layers=2, decoder_attention_heads=2,
               dropout=0.0)
# Two prompts, the second left-padded (<pad>=1), both starting with </s>=2 as fairseq's LM reads them.
PROMPTS = torch.tensor([[2, 5, 6, 7, 8], [1, 1, 2, 9, 10]])
MASK = PROMPTS.ne(1).long()


def tiny_lm(**overrides) -> NodeTransformerForCausalLM:
    """A tiny LM whose weights are nudged off their init, so outputs depend on every layer."""
    torch.manual_seed(0)
    model = NodeTransformerForCausalLM(NodeTransformerLMConfig(**{**TINY_LM, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


FIXED_GRIDS = {
    "rk4": dict(node_method="rk4"), "euler-3": dict(node_method="euler", node_steps=3),
    "rk2_gated": dict(node_method="rk2_gated"), "pc": dict(node_method="pc", node_steps=2),
    "separated-augmented": dict(node_method="midpoint", node_separated_decoder=True, node_augment_dims=2),
    "plain": dict(node_decoder=False),
}


def test_the_auto_classes_know_the_language_model(tmp_path):
    model = tiny_lm(node_method="rk4")
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "node_transformer_lm"
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is NodeTransformerForCausalLM
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert (tmp_path / "model.safetensors").exists()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(PROMPTS, attention_mask=MASK).logits, model(PROMPTS, attention_mask=MASK).logits)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is NodeTransformerLMModel
    assert not any("encoder" in name for name, _ in model.named_parameters())
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied, as fairseq's LM shares them


def test_the_config_has_the_schemas_lm_options_with_their_defaults():
    config = NodeTransformerLMConfig()
    fields = {name for name in config.to_dict() if name.startswith("node_")}
    assert fields == {option.spelled(HF_LM) for option in options_of(HF_LM)}
    assert "node_encoder" not in fields
    assert config.node_options() == NodeOptions()
    assert NodeTransformerLMConfig(node_method="dopri5").use_cache is False  # adaptive: nothing to cache
    assert NodeTransformerLMConfig(node_method="rk4").use_cache is True


@pytest.mark.parametrize("name", sorted(FIXED_GRIDS))
def test_cached_decoding_equals_a_full_pass_with_left_padding(name):
    model = tiny_lm(**FIXED_GRIDS[name])
    with torch.no_grad():
        full = model(PROMPTS, attention_mask=MASK, use_cache=False).logits
        cache = NodeCache(model.config.decoder_layers)
        first = model(PROMPTS[:, :3], attention_mask=MASK[:, :3], cache=cache, use_cache=True).logits
        steps = [model(PROMPTS[:, i:i + 1], attention_mask=MASK[:, :i + 1], cache=cache, use_cache=True).logits
                 for i in range(3, PROMPTS.shape[1])]
    incremental = torch.cat([first, *steps], dim=1)
    keep = MASK.bool()
    torch.testing.assert_close(incremental[keep], full[keep], rtol=1e-5, atol=1e-5)


MODES = {
    "greedy": dict(num_beams=1),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "sampling": dict(do_sample=True, top_k=8, top_p=0.9, temperature=0.8),
    "beam-sampling": dict(do_sample=True, num_beams=2),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("name", ["rk4", "pc", "plain"])
def test_generate_with_the_cache_equals_generate_without(name, mode):
    model = tiny_lm(**FIXED_GRIDS[name])
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        outputs.append(model.generate(PROMPTS, attention_mask=MASK, max_new_tokens=6, use_cache=use_cache,
                                      **MODES[mode]))
    assert torch.equal(outputs[0], outputs[1])
    assert outputs[0].shape[1] > PROMPTS.shape[1]


def test_generate_counts_the_nfe_of_every_step():
    model = tiny_lm(node_method="rk4")
    model.generate(PROMPTS[:1], max_new_tokens=4, min_new_tokens=4, num_beams=1)
    assert model.generation_nfe.decoder_passes == 4
    assert model.generation_nfe.nfe_forward == 4 * 2 * 4  # steps x layers x rk4 stages


def test_adaptive_layers_recompute_the_prefix_exactly():
    model = tiny_lm(node_method="dopri5", node_rtol=1e-5, node_atol=1e-6)
    assert model.config.use_cache is False
    cached = model.generate(PROMPTS[:1], max_new_tokens=5, num_beams=1, use_cache=True)
    uncached = model.generate(PROMPTS[:1], max_new_tokens=5, num_beams=1, use_cache=False)
    assert torch.equal(cached, uncached)


def test_assisted_decoding_and_prompt_lookup_equal_greedy():
    """A coarser grid of the same weights (one Euler step) drafts; the cache rolls back exactly."""
    model = tiny_lm(node_method="rk4", node_steps=2)
    assistant = tiny_lm(node_method="euler", node_steps=1)
    prompt = PROMPTS[:1]
    greedy = model.generate(prompt, max_new_tokens=8, num_beams=1)
    assisted = model.generate(prompt, max_new_tokens=8, num_beams=1, assistant_model=assistant)
    lookup = model.generate(prompt, max_new_tokens=8, num_beams=1, prompt_lookup_num_tokens=2)
    assert torch.equal(assisted, greedy) and torch.equal(lookup, greedy)


def test_training_loss_is_next_token_cross_entropy_and_reaches_every_weight():
    model = tiny_lm(node_method="rk4").train()
    labels = PROMPTS.masked_fill(MASK == 0, -100)
    out = model(PROMPTS, attention_mask=MASK, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 40)
    scored_from_tokens = labels[:, 1:].masked_fill(MASK[:, :-1] == 0, -100)  # a padding position predicts nothing
    expected = torch.nn.functional.cross_entropy(logits, scored_from_tokens.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("fields, message", [
    (dict(node_method="rk5"), "node_method: unknown method 'rk5'; choose one of euler"),
    (dict(node_method="rk4", node_steps=0), "node_steps: must be an integer >= 1, got 0"),
    (dict(decoder_attention_heads=3), "decoder_attention_heads: must divide decoder_embed_dim 16, got 3"),
    (dict(node_augment_dims=3), "node_augment_dims: decoder width 16 + 3 augmented dims is not divisible by "
                                "decoder_attention_heads 2"),
    (dict(node_decoder=False, node_separated_decoder=True), "node_separated_decoder: needs node_decoder"),
    (dict(vocab_size=0), "vocab_size: must be an integer >= 1, got 0"),
    (dict(pad_token_id=40), "pad_token_id: must be a token id in [0, vocab_size=40), got 40"),
    (dict(node_encoder=False), "node_encoder: not an option of node_transformer_lm"),
])
def test_a_bad_config_is_refused_naming_the_field(fields, message):
    with pytest.raises(OptionError, match="^" + re.escape(message)):
        NodeTransformerLMConfig(**{**TINY_LM, **fields})


def _fake_checkpoint(path, arch, keys):
    torch.save({"cfg": {"model": argparse.Namespace(arch=arch), "task": {}},
                "model": {key: torch.zeros(1) for key in keys}}, path)
    return path


def test_each_converter_refuses_the_other_kind_of_checkpoint(tmp_path):
    from node_seq.hf.convert import ConversionError, convert
    from node_seq.hf.convert_lm import convert_lm

    seq2seq = _fake_checkpoint(tmp_path / "seq2seq.pt", "node_transformer_tiny",
                               ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"])
    lm = _fake_checkpoint(tmp_path / "lm.pt", "node_transformer_lm_tiny", ["decoder.embed_tokens.weight"])
    with pytest.raises(ConversionError, match="is an encoder-decoder .* convert it with python -m node_seq.hf.cli.convert$"):
        convert_lm(seq2seq, tmp_path, tmp_path / "out")
    with pytest.raises(ConversionError, match="is a language model .* convert it with python -m node_seq.hf.cli.convert_lm$"):
        convert(lm, tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written
