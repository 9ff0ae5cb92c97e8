"""The HF model on its own: Auto classes, save/load, weight checks, cached decoding, NFE."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from node_seq.hf import NodeCache, NodeTransformerConfig, NodeTransformerForConditionalGeneration, NodeTransformerModel
from node_seq.hf.modeling_node_transformer import EOSAtMaxLength

from hf_helpers import SOURCE, TINY, load_with_report, tiny_model

MASK = SOURCE.ne(1)
TARGET = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10], [2, 11, 12, 13]])


def logits(model, **kwargs):
    with torch.no_grad():
        return model(input_ids=SOURCE, attention_mask=MASK, decoder_input_ids=TARGET, **kwargs).logits


def test_import_node_seq_registers_the_auto_classes():
    config = AutoConfig.for_model("node_transformer", **TINY, node_method="euler")
    assert type(config) is NodeTransformerConfig
    assert type(AutoModelForSeq2SeqLM.from_config(config)) is NodeTransformerForConditionalGeneration
    assert type(AutoModel.from_config(config)) is NodeTransformerModel


@pytest.mark.parametrize("share_all", [True, False])
def test_save_load_round_trip(tmp_path, share_all):
    model = tiny_model(node_method="rk4", share_all_embeddings=share_all)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    saved = load_file(tmp_path / "model.safetensors")
    # tied weights are stored once: the output projection (and shared decoder embedding) are aliases
    assert "lm_head.weight" not in saved
    assert ("model.decoder.embed_tokens.weight" in saved) is (not share_all)

    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(loaded) is NodeTransformerForConditionalGeneration
    loaded.eval()
    assert torch.equal(logits(loaded), logits(model))
    assert loaded.lm_head.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()
    if share_all:
        assert loaded.model.encoder.embed_tokens is loaded.model.decoder.embed_tokens
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_len_b"] == 200
    base = AutoModel.from_pretrained(tmp_path)  # the encoder-decoder without its head
    assert type(base) is NodeTransformerModel


def test_separate_vocabularies_size_the_decoder_and_output_and_survive_save_load(tmp_path):
    model = tiny_model(node_method="rk4", share_all_embeddings=False, decoder_vocab_size=24)
    assert model.get_input_embeddings().num_embeddings == 40
    assert model.get_decoder().embed_tokens.num_embeddings == model.lm_head.out_features == 24
    assert model.lm_head.weight is model.get_decoder().embed_tokens.weight  # tie_word_embeddings: the target side
    assert logits(model).shape[-1] == 24
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(loaded), logits(model))


@pytest.mark.parametrize("tie", [True, False])
def test_resizing_one_shared_embedding_resizes_both_sides_and_the_output_projection(tmp_path, tie):
    model = tiny_model(node_method="rk4", tie_word_embeddings=tie)
    before = logits(model)
    model.resize_token_embeddings(48)
    assert (model.config.vocab_size, model.config.decoder_vocab_size, model.lm_head.out_features) == (48, 48, 48)
    assert model.model.decoder.embed_tokens is model.model.encoder.embed_tokens
    assert (model.lm_head.weight is model.model.encoder.embed_tokens.weight) is tie
    after = logits(model)
    assert after.shape[-1] == 48 and torch.allclose(after[..., :40], before)  # the old tokens' rows are kept
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()) and torch.equal(logits(loaded.eval()), after)
    with pytest.raises(ValueError, match="share_all_embeddings=True .* resize_token_embeddings"):
        model.resize_decoder_token_embeddings(56)


def test_rows_added_without_mean_resizing_get_fairseqs_init():
    model = tiny_model(node_method="rk4", tie_word_embeddings=False)
    model.resize_token_embeddings(440, mean_resizing=False)
    std = TINY["decoder_embed_dim"] ** -0.5  # fairseq's init of embeddings and of an output projection
    for weight in (model.lm_head.weight, model.get_input_embeddings().weight):
        assert weight[40:].std().item() == pytest.approx(std, rel=0.1)


@pytest.mark.parametrize("tie", [True, False])
def test_two_vocabularies_resize_one_side_at_a_time(tmp_path, tie):
    model = tiny_model(node_method="rk4", share_all_embeddings=False, decoder_vocab_size=24, tie_word_embeddings=tie)
    before = logits(model)
    model.resize_token_embeddings(48)  # the source side only
    assert (model.config.vocab_size, model.config.decoder_vocab_size) == (48, 24)
    assert model.get_input_embeddings().num_embeddings == 48 and model.lm_head.out_features == 24
    assert torch.allclose(logits(model), before)
    model.resize_decoder_token_embeddings(30)  # the target side: its embedding and the output projection
    assert (model.config.vocab_size, model.config.decoder_vocab_size) == (48, 30)
    assert model.get_decoder().embed_tokens.num_embeddings == model.lm_head.out_features == 30
    assert (model.lm_head.weight is model.get_decoder().embed_tokens.weight) is tie
    after = logits(model)
    assert torch.allclose(after[..., :24], before)
    model.save_pretrained(tmp_path)
    loaded, info = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()) and torch.equal(logits(loaded.eval()), after)


def test_the_base_model_resizes_a_shared_embedding_for_both_sides():
    model = NodeTransformerModel(NodeTransformerConfig(**TINY, node_method="rk4"))
    model.resize_token_embeddings(48)
    assert (model.config.vocab_size, model.config.decoder_vocab_size) == (48, 48)
    assert model.decoder.embed_tokens.num_embeddings == 48


def test_post_init_keeps_the_layers_own_initialisation():
    model = NodeTransformerForConditionalGeneration(NodeTransformerConfig(**TINY, node_method="rk4",
                                                                          node_augment_dims=2))
    layer = model.model.encoder.layers[0]
    width = TINY["encoder_embed_dim"]
    assert torch.equal(layer.project.weight[:, :width], torch.eye(width))  # augmented layers start as plain ones
    assert torch.all(model.model.encoder.embed_tokens.weight[1] == 0)  # padding row
    assert model.model.encoder.embed_tokens.weight.std().item() == pytest.approx(width ** -0.5, rel=0.2)


def without(path, key: str) -> None:
    """Delete ``key`` from the weights saved in ``path``."""
    weights = load_file(path / "model.safetensors")
    del weights[key]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_weights_are_initialised_and_named_in_a_warning(tmp_path):
    model = tiny_model(node_method="rk4")
    model.save_pretrained(tmp_path)
    key = "model.decoder.layers.1.field.ffn.fc2.weight"
    without(tmp_path, key)
    loaded, report = load_with_report(AutoModelForSeq2SeqLM, tmp_path)
    assert "MISSING" in report and key in report
    fresh = dict(NodeTransformerForConditionalGeneration(model.config).named_parameters())[key]
    for name, tensor in loaded.state_dict().items():
        if name != key:
            assert torch.equal(tensor, model.state_dict()[name]), name  # the rest is loaded, untouched
    weight = loaded.get_parameter(key)
    assert torch.isfinite(weight).all() and not torch.equal(weight, model.get_parameter(key))
    assert weight.std().item() == pytest.approx(fresh.std().item(), rel=0.2)  # the layer's own init
    missing = rf"strict=True\): .*missing from the checkpoint: \['{key}'\]"
    with pytest.raises(ValueError, match=missing):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path, strict=True)


@pytest.mark.parametrize("tie", [True, False])
def test_a_checkpoint_without_the_head_loads_into_the_model_with_one(tmp_path, tie):
    config = NodeTransformerConfig(**TINY, node_method="rk4", tie_word_embeddings=tie)
    torch.manual_seed(0)
    base = NodeTransformerModel(config)
    base.save_pretrained(tmp_path)
    model, report = load_with_report(AutoModelForSeq2SeqLM, tmp_path)
    for name, tensor in base.state_dict().items():
        assert torch.equal(model.model.state_dict()[name], tensor), name
    if tie:  # the head is the embedding: nothing is missing
        assert report == "" and model.lm_head.weight is model.model.decoder.embed_tokens.weight
    else:
        assert "MISSING" in report and "lm_head.weight" in report
        assert model.lm_head.weight.std().item() == pytest.approx(TINY["decoder_embed_dim"] ** -0.5, rel=0.3)
        with pytest.raises(ValueError, match=r"missing from the checkpoint: \['lm_head.weight'\]"):
            AutoModelForSeq2SeqLM.from_pretrained(tmp_path, strict=True)


def test_weights_of_another_shape_are_an_error_unless_ignored(tmp_path):
    tiny_model(node_method="rk4").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["encoder_ffn_dim"] = 48  # the weights are for 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # transformers' own refusal
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    model, report = load_with_report(AutoModelForSeq2SeqLM, tmp_path, ignore_mismatched_sizes=True)
    assert "MISMATCH" in report and "model.encoder.layers.{0, 1}.field.ffn.fc1.weight" in report  # both layers
    assert model.model.encoder.layers[0].field.ffn.fc1.weight.shape == (48, 16)
    shapes = r"shapes differ from the config: .*fc1.weight \(checkpoint \(32, 16\), model \(48, 16\)\)"
    with pytest.raises(ValueError, match=shapes):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path, strict=True)


def test_unused_weights_are_named_in_a_warning(tmp_path):
    tiny_model(node_method="rk4").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["decoder_layers"] = 1  # the checkpoint has two decoder layers
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, report = load_with_report(AutoModelForSeq2SeqLM, tmp_path)
    assert "UNEXPECTED" in report and "model.decoder.layers.1" in report and len(model.model.decoder.layers) == 1
    unused = r"not used by NodeTransformerForConditionalGeneration: \['model.decoder.layers.1"
    with pytest.raises(ValueError, match=unused):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path, strict=True)


def test_translate_loads_strictly_and_names_the_missing_weight(tmp_path, capsys):
    from node_seq.hf.cli import translate

    tiny_model(node_method="rk4").save_pretrained(tmp_path)
    without(tmp_path, "model.encoder.layers.0.field.ffn.fc1.weight")
    with pytest.raises(SystemExit):
        translate.main(["--model", str(tmp_path), "1 2 3"])
    assert "--model: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        translate.main(["--model", str(tmp_path), "1 2 3"])
    assert "missing from the checkpoint: ['model.encoder.layers.0.field.ffn.fc1.weight']" in capsys.readouterr().err


FIXED_GRID = {
    "rk4": dict(node_method="rk4", node_steps=2),
    "euler": dict(node_method="euler", node_steps=3),
    "separated": dict(node_method="rk4", node_separated_decoder=True),
    "augmented": dict(node_method="midpoint", node_augment_dims=2, node_time_dependent=True),
}


@pytest.mark.parametrize("variant", FIXED_GRID)
def test_cached_decoding_equals_uncached(variant):
    model = tiny_model(**FIXED_GRID[variant])
    assert model.config.use_cache
    for beams in (1, 3):
        runs = {cache: model.generate(SOURCE, attention_mask=MASK, num_beams=beams, max_new_tokens=7, use_cache=cache,
                                      output_scores=True, return_dict_in_generate=True) for cache in (True, False)}
        assert isinstance(runs[True].cache, NodeCache) and runs[False].cache is None
        assert torch.equal(runs[True].sequences, runs[False].sequences)
        for cached, full in zip(runs[True].scores, runs[False].scores):
            finite = torch.isfinite(full)
            assert torch.equal(finite, torch.isfinite(cached))
            assert torch.allclose(cached[finite], full[finite], atol=1e-5)
        assert runs[True].sequences.shape[1] > 3


@pytest.mark.parametrize("variant", ["rk4", "separated"])
def test_step_by_step_logits_with_a_cache_equal_the_full_pass(variant):
    model = tiny_model(**FIXED_GRID[variant])
    full = logits(model)
    with torch.no_grad():
        encoder = model.get_encoder()(SOURCE, MASK)
        cache, steps = None, []
        for position in range(TARGET.shape[1]):
            out = model(attention_mask=MASK, encoder_outputs=encoder, cache=cache, use_cache=True,
                        decoder_input_ids=TARGET[:, position:position + 1])
            cache = out.cache
            steps.append(out.logits)
        chunked = model(attention_mask=MASK, encoder_outputs=encoder, decoder_input_ids=TARGET, use_cache=True).logits
    assert cache.get_seq_length() == TARGET.shape[1]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert torch.allclose(chunked, full, atol=1e-5)


def test_adaptive_decoder_turns_the_cache_off_and_matches_full_passes():
    model = tiny_model(node_method="dopri5", node_rtol=1e-4, node_atol=1e-5)
    assert model.config.use_cache is False and model.generation_config.use_cache is False
    source, mask = SOURCE[:1], MASK[:1]
    out = model.generate(source, attention_mask=mask, num_beams=1, max_new_tokens=6, return_dict_in_generate=True,
                         output_scores=True)
    assert out.cache is None
    tokens = torch.tensor([[2]])  # greedy by hand: a full forward pass for every prefix
    with torch.no_grad():
        for step in range(out.sequences.shape[1] - 1):
            step_logits = model(input_ids=source, attention_mask=mask, decoder_input_ids=tokens).logits[:, -1]
            allowed = torch.isfinite(out.scores[step][0])  # generation masks <pad>, and </s> at first
            assert torch.allclose(out.scores[step][0][allowed], step_logits[0][allowed], atol=1e-5)
            tokens = torch.cat([tokens, out.sequences[:, step + 1:step + 2]], dim=1)
    assert out.sequences.shape[1] > 2


def test_nfe_after_forward_backward_and_generate():
    model = tiny_model(node_method="rk4", node_steps=2, node_gradient="checkpoint")
    logits(model)
    per_solve = 2 * 4  # steps x stages
    layers = TINY["encoder_layers"]
    assert model.last_nfe.encoder.nfe_forward == layers * per_solve
    assert model.last_nfe.decoder.nfe_forward == TINY["decoder_layers"] * per_solve
    assert model.last_nfe.nfe_forward == (layers + TINY["decoder_layers"]) * per_solve

    model.train()
    labels = TARGET[:, 1:]
    model(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss.backward()
    assert model.nfe_backward > 0  # checkpointing re-evaluates the field in the backward pass

    model.eval()
    out = model.generate(SOURCE, attention_mask=MASK, num_beams=2, max_new_tokens=5)
    steps = out.shape[1] - 1
    assert model.generation_nfe.decoder_passes == steps
    assert model.generation_nfe.encoder.nfe_forward == layers * per_solve
    assert model.generation_nfe.decoder.nfe_forward == steps * TINY["decoder_layers"] * per_solve


def test_kinetic_weight_adds_the_energy_to_the_training_loss_only():
    from node_seq.nn.layers import total_regularizer

    labels = TARGET[:, 1:]
    plain = tiny_model(node_method="rk4", dropout=0.0)
    penalised = tiny_model(node_method="rk4", dropout=0.0, node_kinetic_weight=0.25)
    penalised.load_state_dict(plain.state_dict())
    for model in (plain, penalised):
        model.train()
    base = plain(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    total = penalised(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    energy = total_regularizer(penalised, "kinetic")
    assert energy is not None and energy > 0
    torch.testing.assert_close(total, base + 0.25 * energy)
    for model in (plain, penalised):
        model.eval()
    torch.testing.assert_close(penalised(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss,
                               plain(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss)


def test_jacobian_weight_adds_the_jacobian_norm_to_the_training_loss():
    from node_seq.nn.layers import total_regularizer

    labels = TARGET[:, 1:]
    plain = tiny_model(node_method="rk4", dropout=0.0)
    penalised = tiny_model(node_method="rk4", dropout=0.0, node_jacobian_weight=0.5)
    penalised.load_state_dict(plain.state_dict())
    plain.train(), penalised.train()
    base = plain(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    total = penalised(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    norm = total_regularizer(penalised, "jacobian")
    assert norm is not None and norm > 0 and total_regularizer(penalised, "kinetic") is None
    torch.testing.assert_close(total, base + 0.5 * norm)
    total.backward()  # differentiable: the Hutchinson term was built with create_graph
    assert all(p.grad is not None for p in penalised.model.encoder.layers[0].parameters())


def test_left_and_right_padding_give_the_same_encoding():
    model = tiny_model(node_method="rk4")
    lengths = MASK.sum(1)
    left = torch.ones_like(SOURCE)
    for row, length in enumerate(lengths):
        left[row, SOURCE.shape[1] - length:] = SOURCE[row, :length]
    with torch.no_grad():
        right_out = model.get_encoder()(SOURCE, MASK).last_hidden_state
        left_out = model.get_encoder()(left, left.ne(1)).last_hidden_state
    for row, length in enumerate(lengths):
        assert torch.allclose(right_out[row, :length], left_out[row, -length:], atol=1e-5)


def test_generation_follows_fairseq_length_rules():
    model = tiny_model(node_method="euler")
    with torch.no_grad():
        out = model.generate(SOURCE, attention_mask=MASK, num_beams=1, max_len_b=4)
    assert out.shape[1] <= 1 + 4 + 1  # start + max_len_b tokens + </s>
    assert torch.all((out == 2).any(dim=1))  # every row ends with </s>, forced at the limit
    assert not torch.any(out[:, 1] == 2)  # min length: never </s> first
    for row in out[:, 1:].tolist():
        assert 1 not in row[: row.index(2)]  # <pad> is never generated

    rule = EOSAtMaxLength(max_length=4, eos_token_id=2)
    scores = torch.log_softmax(torch.randn(2, 10), dim=-1)
    forced = rule(torch.zeros(2, 3, dtype=torch.long), scores.clone())
    assert torch.equal(forced[:, 2], scores[:, 2]) and torch.all(torch.isinf(forced[:, [0, 1, 3]]))
    assert torch.equal(rule(torch.zeros(2, 2, dtype=torch.long), scores.clone()), scores)


def test_one_euler_step_models_count_nfe_and_add_their_kinetic_energy():
    """The ResNet-as-ODE setting (OT-Transformer's recipe): one Euler step is still an ODE."""
    labels = TARGET[:, 1:]
    plain = tiny_model(node_method="euler", node_steps=1, dropout=0.0)
    penalised = tiny_model(node_method="euler", node_steps=1, dropout=0.0, node_kinetic_weight=1.0)
    penalised.load_state_dict(plain.state_dict())
    plain.train(), penalised.train()
    base = plain(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    total = penalised(input_ids=SOURCE, attention_mask=MASK, labels=labels).loss
    assert total > base
    assert plain.last_nfe.encoder.nfe_forward == TINY["encoder_layers"]
    assert plain.last_nfe.decoder.nfe_forward == TINY["decoder_layers"]
