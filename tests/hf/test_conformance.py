"""What a transformers model is expected to do, checked on the NODE-Transformer.

Each test stands for a behaviour a user of transformers relies on (and that this model once got
wrong): generation limits that win over other rules, config-level output flags, complete weight
initialisation, refused arguments, reloadable configs, assisted decoding, ``get_encoder`` and
tracing without data-dependent branches.
"""

import copy
import itertools
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from node_seq.hf import NodeCache, NodeTransformerConfig, NodeTransformerForConditionalGeneration
from node_seq.ode import OptionError

from hf_helpers import SOURCE, TINY, tiny_model

MASK = SOURCE.ne(1)
TARGET = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10], [2, 11, 12, 13]])
EOS = 2

# ---------------------------------------------------------------------------------------------
# 1. the length limit the user set wins over rules that ban </s>

BANNING_EOS = {
    "min_length (fairseq's default: never </s> first)": {},
    "min_new_tokens": dict(min_new_tokens=3),
    "bad_words_ids": dict(bad_words_ids=[[EOS]]),
}
SEARCHES = {"greedy": dict(num_beams=1), "sampling": dict(num_beams=1, do_sample=True, top_k=5),
            "beam": dict(num_beams=3)}


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("rule", BANNING_EOS)
def test_a_forced_eos_at_max_length_beats_rules_that_ban_it(rule, search):
    model = tiny_model(node_method="rk4")
    torch.manual_seed(0)
    out = model.generate(SOURCE, attention_mask=MASK, max_new_tokens=1, output_scores=True,
                         return_dict_in_generate=True, **BANNING_EOS[rule], **SEARCHES[search])
    assert out.sequences.tolist() == [[EOS, EOS]] * SOURCE.shape[0]
    assert torch.isfinite(out.scores[0][:, EOS]).all()


GENERATE_MODES = {
    "greedy": dict(num_beams=1),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "sampling": dict(num_beams=1, do_sample=True, top_p=0.9, temperature=0.8, num_return_sequences=2),
    "beam sampling": dict(num_beams=2, do_sample=True, top_k=10),
}


@pytest.mark.parametrize("mode", GENERATE_MODES)
def test_every_generate_mode_gives_the_same_tokens_with_and_without_the_cache(mode):
    model = tiny_model(node_method="rk4", node_steps=2)
    runs = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        runs.append(model.generate(SOURCE, attention_mask=MASK, max_new_tokens=6, use_cache=use_cache,
                                   **GENERATE_MODES[mode]))
    copies = GENERATE_MODES[mode].get("num_return_sequences", 1)
    assert runs[0].shape[0] == SOURCE.shape[0] * copies and runs[0].shape[1] > 2
    assert torch.equal(runs[0], runs[1])


def test_the_forced_eos_keeps_the_score_it_had_before_the_rules():
    model = tiny_model(node_method="rk4")
    out = model.generate(SOURCE, attention_mask=MASK, max_new_tokens=1, num_beams=1, output_scores=True,
                         return_dict_in_generate=True)
    with torch.no_grad():
        first = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET[:, :1]).logits[:, 0]
    scores = out.scores[0]
    assert torch.allclose(scores[:, EOS], first[:, EOS], atol=1e-5)
    assert torch.isinf(scores[:, [t for t in range(scores.shape[1]) if t != EOS]]).all()


def test_without_a_conflict_the_rules_still_apply():
    model = tiny_model(node_method="rk4")
    out = model.generate(SOURCE, attention_mask=MASK, max_new_tokens=6, num_beams=1, min_new_tokens=4)
    assert not (out[:, 1:5] == EOS).any()  # </s> stays banned before the limit


# ---------------------------------------------------------------------------------------------
# 2. output flags come from the config when the call does not pass them


def encode_decode(model, **kwargs):
    with torch.no_grad():
        return model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET, **kwargs)


def test_from_pretrained_output_hidden_states_is_read(tmp_path):
    tiny_model(node_method="rk4").save_pretrained(tmp_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_hidden_states=True).eval()
    out = encode_decode(model)
    assert len(out.encoder_hidden_states) == TINY["encoder_layers"] + 1
    assert len(out.decoder_hidden_states) == TINY["decoder_layers"] + 1
    assert encode_decode(model, output_hidden_states=False).encoder_hidden_states is None  # the call wins


def test_config_use_cache_and_return_dict_are_read():
    model = tiny_model(node_method="rk4")
    assert isinstance(encode_decode(model).cache, NodeCache)
    model.config.use_cache = False
    assert encode_decode(model).cache is None
    assert isinstance(encode_decode(model, use_cache=True).cache, NodeCache)
    model.config.return_dict = False
    out = encode_decode(model)
    assert isinstance(out, tuple) and torch.equal(out[0], encode_decode(model, return_dict=True).logits)


def test_the_cache_does_not_change_the_numbers_with_padded_decoder_inputs():
    model = tiny_model(node_method="rk4", node_steps=2)
    target = torch.tensor([[2, 5, 6, 7], [2, 8, 1, 1], [1, 1, 2, 11]])  # right- and left-padded rows
    mask = target.ne(1)
    following = torch.tensor([[9], [9], [9]])
    with torch.no_grad():
        runs = {use: model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=target,
                           decoder_attention_mask=mask, use_cache=use) for use in (True, False)}
        step = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=following, cache=runs[True].cache,
                     decoder_attention_mask=torch.cat([mask, torch.ones_like(following, dtype=torch.bool)], 1))
        full = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=torch.cat([target, following], 1),
                     use_cache=False)
    assert torch.allclose(runs[True].logits, runs[False].logits, atol=1e-5)
    assert torch.allclose(step.logits[:, 0], full.logits[:, -1], atol=1e-5)


def test_attention_weights_are_refused_by_name():
    model = tiny_model(node_method="rk4")
    with pytest.raises(NotImplementedError, match="output_attentions"):
        encode_decode(model, output_attentions=True)
    model.config.output_attentions = True
    with pytest.raises(NotImplementedError, match="output_attentions"):
        encode_decode(model)


# ---------------------------------------------------------------------------------------------
# 3. _init_weights initialises every parameter and buffer

EVERY_MODULE = dict(node_method="rk4", node_augment_dims=2, node_time_dependent=True, node_separated_decoder=True,
                    share_all_embeddings=False, tie_word_embeddings=False)


@pytest.mark.parametrize("method", ["rk4", "rk2_gated", "pc"])  # the learned blocks own more modules
def test_a_model_materialised_from_the_meta_device_is_fully_initialised(method):
    config = NodeTransformerConfig(**{**TINY, **EVERY_MODULE, "node_method": method})
    torch.manual_seed(0)
    fresh = NodeTransformerForConditionalGeneration(config)
    with torch.device("meta"):
        model = NodeTransformerForConditionalGeneration(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.fill_(math.nan)  # whatever to_empty left: nothing may survive init_weights
    model.init_weights()
    expected = dict(itertools.chain(fresh.named_parameters(), fresh.named_buffers()))
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        want = expected[name]
        assert torch.isfinite(tensor).all(), name
        if want.numel() == 1 or want.std() == 0 or name.endswith(("project.weight", "embed_positions.weight")):
            assert torch.equal(tensor, want), name  # constants: LayerNorms, zero biases, identities, tables
        elif want.numel() >= 64:  # two samples' stds agree to 50% only with enough elements
            assert tensor.std().item() == pytest.approx(want.std().item(), rel=0.5), name  # same distribution
        else:
            assert tensor.std() > 0, name  # drawn at random, as fresh
    assert torch.all(model.model.encoder.embed_tokens.weight[config.pad_token_id] == 0)
    model.eval()
    assert torch.isfinite(encode_decode(model).logits).all()


def test_loading_does_not_reinitialise_loaded_weights(tmp_path):
    model = tiny_model(**EVERY_MODULE)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    for (name, tensor), (_, want) in zip(loaded.state_dict().items(), model.state_dict().items()):
        assert torch.equal(tensor, want), name
    assert loaded.lm_head.weight.data_ptr() != loaded.model.decoder.embed_tokens.weight.data_ptr()


# ---------------------------------------------------------------------------------------------
# 4. embeddings as inputs; anything else unknown is refused


def test_inputs_embeds_and_decoder_inputs_embeds_equal_the_ids():
    model = tiny_model(node_method="rk4", share_all_embeddings=False)
    embed = model.get_input_embeddings()
    decoder_embed = model.get_decoder().embed_tokens
    with torch.no_grad():
        by_ids = encode_decode(model).logits
        by_embeds = model(inputs_embeds=embed(SOURCE), attention_mask=MASK,
                          decoder_inputs_embeds=decoder_embed(TARGET)).logits
    assert torch.allclose(by_embeds, by_ids, atol=1e-6)
    generated = model.generate(inputs_embeds=embed(SOURCE), attention_mask=MASK, num_beams=2, max_len_b=5)
    assert torch.equal(generated, model.generate(SOURCE, attention_mask=MASK, num_beams=2, max_len_b=5))
    assert generated.shape[1] <= 1 + 5 + 1  # fairseq's length rule reads the width of the embeddings too


def test_ids_and_embeddings_together_are_refused():
    model = tiny_model(node_method="rk4")
    with pytest.raises(ValueError, match="exactly one of decoder_input_ids and decoder_inputs_embeds"):
        model(input_ids=SOURCE, decoder_input_ids=TARGET, decoder_inputs_embeds=model.get_decoder().embed_tokens(TARGET))


@pytest.mark.parametrize("argument", ["decoder_input_idz", "head_mask", "position_ids"])
def test_unknown_arguments_are_refused_by_name(argument):
    model = tiny_model(node_method="rk4")
    with pytest.raises(TypeError, match=argument):
        encode_decode(model, **{argument: TARGET})
    with pytest.raises((TypeError, ValueError), match=argument):  # generate's own check, or forward's
        model.generate(SOURCE, attention_mask=MASK, max_new_tokens=2, **{argument: TARGET})


def test_past_key_values_is_still_accepted_for_cache():
    model = tiny_model(node_method="rk4")
    with torch.no_grad():
        first = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET[:, :2], use_cache=True)
        with pytest.warns(FutureWarning, match="past_key_values"):
            second = model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET[:, 2:],
                           past_key_values=first.cache, use_cache=True)
    assert torch.allclose(second.logits, encode_decode(model).logits[:, 2:], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 5. a config that builds reloads; a contradiction is refused when made


SHARING = {"one embedding, tied": (True, True), "one embedding, own lm_head": (True, False),
           "two embeddings, tied": (False, True), "two embeddings, own lm_head": (False, False)}


@pytest.mark.parametrize("sharing", SHARING)
def test_tie_word_embeddings_decides_the_output_projection_alone(tmp_path, sharing):
    share, tie = SHARING[sharing]
    model = tiny_model(node_method="rk4", share_all_embeddings=share, tie_word_embeddings=tie)
    encoder, decoder = model.model.encoder.embed_tokens, model.model.decoder.embed_tokens
    assert (encoder is decoder) is share
    assert (model.lm_head.weight is decoder.weight) is tie
    model.save_pretrained(tmp_path)
    assert ("lm_head.weight" in load_file(tmp_path / "model.safetensors")) is not tie
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched key, no error
    assert (loaded.model.encoder.embed_tokens is loaded.model.decoder.embed_tokens) is share
    assert (loaded.lm_head.weight is loaded.model.decoder.embed_tokens.weight) is tie
    assert torch.equal(encode_decode(loaded.eval()).logits, encode_decode(model).logits)


def test_an_own_output_projection_is_initialised_like_fairseqs():
    config = NodeTransformerConfig(**{**TINY, "decoder_vocab_size": 4000, "vocab_size": 4000,
                                      "tie_word_embeddings": False})
    model = NodeTransformerForConditionalGeneration(config)
    weight = model.lm_head.weight
    assert weight is not model.model.decoder.embed_tokens.weight
    assert weight.mean().item() == pytest.approx(0.0, abs=0.01)
    assert weight.std().item() == pytest.approx(TINY["decoder_embed_dim"] ** -0.5, rel=0.05)
    assert torch.any(weight[config.pad_token_id] != 0)  # a projection row, not an embedding's padding row


def test_a_contradiction_made_after_the_config_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(OptionError, match="share_all_embeddings: needs one vocabulary"):
        NodeTransformerConfig(**TINY, decoder_vocab_size=24)
    config = NodeTransformerConfig(**TINY)
    config.decoder_vocab_size = 24  # changed after the config was made
    with pytest.raises(OptionError, match="share_all_embeddings: needs one vocabulary"):
        NodeTransformerForConditionalGeneration(config)
    with pytest.raises(OptionError, match="share_all_embeddings: needs one vocabulary"):
        config.save_pretrained(tmp_path / "config")
    assert not (tmp_path / "config" / "config.json").exists()


# ---------------------------------------------------------------------------------------------
# 6. assisted decoding: the per-stage cache rolls back exactly


def test_cropping_the_cache_rolls_decoding_back_exactly():
    model = tiny_model(node_method="rk4", node_steps=2)
    full = encode_decode(model).logits
    with torch.no_grad():
        encoder = model.get_encoder()(SOURCE, MASK)
        ahead = model(attention_mask=MASK, encoder_outputs=encoder, decoder_input_ids=TARGET[:, :3], use_cache=True)
        cache = ahead.cache
        cache.crop(-2)  # forget the last two positions
        assert cache.get_seq_length() == 1
        again = model(attention_mask=MASK, encoder_outputs=encoder, decoder_input_ids=TARGET[:, 1:], cache=cache)
    assert torch.allclose(again.logits, full[:, 1:], atol=1e-5)
    with pytest.raises(ValueError, match="negative"):
        cache.crop(2)


@pytest.mark.parametrize("method", ["rk4", "separated"])
def test_assisted_decoding_equals_greedy_decoding(method):
    settings = dict(node_method="rk4", node_steps=2, node_separated_decoder=method == "separated")
    model = tiny_model(**settings)
    # The draft model: the same weights on a coarser grid (one Euler step), cheap and close.
    assistant = tiny_model(**{**settings, "node_method": "euler", "node_steps": 1})
    assistant.load_state_dict(model.state_dict())
    for row in range(SOURCE.shape[0]):  # transformers' assisted decoding takes one sentence at a time
        source, mask = SOURCE[row:row + 1], MASK[row:row + 1]
        greedy = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8)
        assisted = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8,
                                  assistant_model=assistant)
        prompt_lookup = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8,
                                       prompt_lookup_num_tokens=2)
        assert greedy.shape[1] > 3
        assert torch.equal(assisted, greedy) and torch.equal(prompt_lookup, greedy)


def counted(model) -> tuple[list, object]:
    """A list that grows by one per forward pass of ``model``, and the hook's handle."""
    passes = []
    return passes, model.register_forward_hook(lambda *_: passes.append(1))


def test_assisted_decoding_counts_the_models_own_passes_even_when_it_assists_itself():
    model = tiny_model(node_method="rk4", node_steps=2)
    per_pass = TINY["decoder_layers"] * 2 * 4  # layers x steps x rk4 stages
    source, mask = SOURCE[:1], MASK[:1]
    greedy = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8)
    encoder_nfe = model.generation_nfe.encoder
    runs = {}
    for name, assistant in (("a copy", copy.deepcopy(model)), ("itself", model)):
        passes, hook = counted(model)
        tokens = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8, assistant_model=assistant)
        hook.remove()
        assert torch.equal(tokens, greedy), name
        runs[name] = model.generation_nfe, len(passes)
    copy_nfe, copy_passes = runs["a copy"]
    assert copy_nfe.decoder_passes == copy_passes  # the copy's drafting passes are its own
    assert copy_nfe.encoder == encoder_nfe and copy_nfe.decoder.nfe_forward == copy_passes * per_pass
    self_nfe, self_passes = runs["itself"]
    assert self_nfe == copy_nfe  # the same verification passes, whoever drafted them
    assert self_passes > self_nfe.decoder_passes  # its drafts ran through the same forward, uncounted


def test_a_random_assistant_of_the_same_class_changes_no_token():
    model = tiny_model(node_method="rk4", node_steps=2)
    torch.manual_seed(1)
    assistant = NodeTransformerForConditionalGeneration(NodeTransformerConfig(**TINY, node_method="euler")).eval()
    for row in range(SOURCE.shape[0]):
        source, mask = SOURCE[row:row + 1], MASK[row:row + 1]
        greedy = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8)
        passes, hook = counted(model)
        assisted = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=8,
                                  assistant_model=assistant)
        hook.remove()
        assert torch.equal(assisted, greedy)
        assert model.generation_nfe.decoder_passes == len(passes)
        assert assistant.generation_nfe.decoder_passes >= 1  # its last draft's own count


# ---------------------------------------------------------------------------------------------
# 7. get_encoder(modality) as transformers' base models answer it


def test_get_encoder_answers_like_transformers_models():
    model = tiny_model(node_method="rk4")
    assert model.get_encoder() is model.model.encoder
    assert model.model.get_encoder() is model.model.encoder
    for modality in ("image", "video", "audio"):
        assert model.get_encoder(modality) is model  # no encoder of that modality: the model itself
    with pytest.raises(ValueError, match="modality"):
        model.get_encoder("smell")


# ---------------------------------------------------------------------------------------------
# 8. no branch on tensor values: the encoder and decoder export with dynamic shapes


@pytest.mark.slow  # torch.export traces the model
def test_plain_layers_export_with_dynamic_batch_and_length():
    model = tiny_model(node_encoder=False, node_decoder=False, node_method="euler")
    batch, length = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("length", min=2, max=512)
    encoder = torch.export.export(model.get_encoder(), (SOURCE, MASK),
                                  dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}), strict=False)
    source = torch.tensor([[7, 8, 2, 1], [9, 2, 1, 1]])
    exported = encoder.module()(source, source.ne(1)).last_hidden_state
    assert torch.allclose(exported, model.get_encoder()(source, source.ne(1)).last_hidden_state, atol=1e-6)
