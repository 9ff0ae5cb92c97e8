"""NodeTransformerConfig: every field checked at construction, errors name the field and the choices; unknown
``node_*`` keys refused by both configs (seq2seq and LM), in ``__init__``, ``config.json`` and overrides; the
NODE options validated once per config, kept out of what is saved and compared, and read again after an edit."""

import copy
import json
import pickle

import pytest
from hf_helpers import TINY, TINY_LM
from transformers import AutoConfig

from node_seq.hf import NodeTransformerConfig, NodeTransformerForCausalLM, NodeTransformerForConditionalGeneration, \
    NodeTransformerLMConfig
from node_seq.nn.layers import is_ode_layer
from node_seq.ode import OptionError


@pytest.mark.parametrize("fields, message", [
    (dict(node_method="rk5"), r"node_method: unknown method 'rk5'; choose one of euler, .*dopri5"),
    (dict(node_gradient="magic"), r"node_gradient: unknown gradient mode 'magic'; choose one of backprop, checkpoint"),
    (dict(node_steps=0), r"node_steps: must be an integer >= 1, got 0"),
    (dict(node_steps=2, node_step_size=0.5), r"node_steps: give either node_steps or node_step_size, not both"),
    (dict(node_step_size=-0.1), r"node_step_size: must be a finite number > 0"),
    (dict(node_rtol=0.0), r"node_rtol: must be a finite number > 0"),
    (dict(node_adjoint_atol=-1.0), r"node_adjoint_atol: must be a finite number > 0"),
    (dict(node_max_num_steps=0), r"node_max_num_steps: must be an integer >= 1"),
    (dict(node_ts="1,0"), r"node_ts: time points must be finite and strictly increasing"),
    (dict(node_ts=[0.0, 1.0, 2.0]), r"node_ts: expected exactly two time points"),
    (dict(node_method="dopri5", node_gradient="checkpoint"), r"node_gradient: 'checkpoint' needs a fixed-grid method"),
    (dict(node_augment_dims=3), r"node_augment_dims: encoder width 64 \+ 3 .* use a value such as 0, 4, 8, 12"),
    (dict(node_augment_dims=-4), r"node_augment_dims: must be an integer >= 0"),
    (dict(node_separated_decoder=True, node_decoder=False), r"node_separated_decoder: needs node_decoder \(without it"),
    (dict(node_kinetic_weight=-0.5), r"node_kinetic_weight: must be a finite number >= 0, got -0.5"),
    (dict(node_kinetic_weight=float("inf")), r"node_kinetic_weight: must be a finite number >= 0, got inf"),
    (dict(node_checkpoint_snapshots=3), r"node_checkpoint_snapshots: applies only to gradient 'checkpoint'"),
    (dict(node_jacobian_weight=-1.0), r"node_jacobian_weight: must be a finite number >= 0, got -1.0"),
    (dict(encoder_attention_heads=3), r"encoder_attention_heads: must divide encoder_embed_dim 64, got 3"),
    (dict(decoder_layers=0), r"decoder_layers: must be an integer >= 1, got 0"),
    (dict(dropout=1.0), r"dropout: must be a probability in \[0, 1\), got 1.0"),
    (dict(activation_function="swish"), r"activation_function: unknown activation 'swish'; choose one of relu, gelu"),
    (dict(share_all_embeddings=True, decoder_embed_dim=32, decoder_attention_heads=4),
     r"share_all_embeddings: needs encoder_embed_dim == decoder_embed_dim"),
    (dict(pad_token_id=500), r"pad_token_id: must be a token id in \[0, vocab_size=128\), got 500"),
    (dict(decoder_vocab_size=0, share_all_embeddings=False), r"decoder_vocab_size: must be an integer >= 1, got 0"),
    (dict(decoder_vocab_size=64), r"share_all_embeddings: needs one vocabulary, got vocab_size 128 and "
                                  r"decoder_vocab_size 64; use share_all_embeddings=False"),
    (dict(decoder_vocab_size=2, share_all_embeddings=False), r"eos_token_id: .*\[0, decoder_vocab_size=2\), got 2"),
])
def test_invalid_fields_raise_naming_the_field(fields, message):
    with pytest.raises(OptionError, match=message):
        NodeTransformerConfig(**fields)


def test_defaults_follow_fairseq_and_adaptive_decoders_do_not_cache():
    config = NodeTransformerConfig()
    solver = (config.node_method, config.node_rtol, config.node_atol, config.node_ts)
    assert solver == ("dopri5", 1e-3, 1e-4, [0.0, 1.0])
    assert (config.pad_token_id, config.eos_token_id, config.decoder_start_token_id) == (1, 2, 2)
    assert config.use_cache is False  # adaptive decoder
    assert NodeTransformerConfig(node_method="rk4").use_cache is True
    assert NodeTransformerConfig(node_method="dopri5", node_decoder=False).use_cache is True
    assert NodeTransformerConfig(node_ts="0,2").solver_config().t1 == 2.0


def test_json_round_trip_and_auto_config(tmp_path):
    config = NodeTransformerConfig(node_method="heun", node_step_size=0.25, node_ts=(0.0, 2.0), node_augment_dims=4,
                                   node_gradient="adjoint", node_adjoint_rtol=1e-5, node_seminorm=True)
    config.save_pretrained(tmp_path)
    snapshots = NodeTransformerConfig(node_method="rk4", node_steps=8, node_gradient="checkpoint",
                                      node_checkpoint_snapshots=2)
    snapshots.save_pretrained(tmp_path / "snapshots")
    assert AutoConfig.from_pretrained(tmp_path / "snapshots").solver_config().checkpoint_snapshots == 2
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is NodeTransformerConfig
    assert loaded.solver_config() == config.solver_config()
    assert loaded.node_augment_dims == 4 and loaded.node_ts == [0.0, 2.0]


def test_one_shared_embedding_with_an_output_projection_of_its_own_is_a_config(tmp_path):
    config = NodeTransformerConfig(share_all_embeddings=True, tie_word_embeddings=False)  # refused before #27
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert (loaded.share_all_embeddings, loaded.tie_word_embeddings) == (True, False)


def test_a_hand_edited_config_json_is_validated_on_load(tmp_path):
    NodeTransformerConfig(node_method="rk4").save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(path.read_text().replace('"rk4"', '"rk45"'))
    with pytest.raises(OptionError, match="node_method: unknown method 'rk45'"):
        AutoConfig.from_pretrained(tmp_path)


def test_a_target_vocabulary_of_its_own_and_configs_saved_without_one(tmp_path):
    config = NodeTransformerConfig(vocab_size=40, decoder_vocab_size=56, share_all_embeddings=False)
    config.save_pretrained(tmp_path / "two")
    assert (AutoConfig.from_pretrained(tmp_path / "two").decoder_vocab_size, config.vocab_size) == (56, 40)
    NodeTransformerConfig(vocab_size=40).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    del saved["decoder_vocab_size"]  # a config.json written before the field existed
    path.write_text(json.dumps(saved))
    assert AutoConfig.from_pretrained(tmp_path / "old").decoder_vocab_size == 40
    assert config.get_text_config(decoder=True).vocab_size == 56  # what generation reads of the decoder


BOTH_CONFIGS = pytest.mark.parametrize("config_class", [NodeTransformerConfig, NodeTransformerLMConfig],
                                       ids=["seq2seq", "lm"])


@BOTH_CONFIGS
@pytest.mark.parametrize("key, nearest", [("node_methd", "node_method"), ("node_step", "node_steps"),
                                          ("node_gradients", "node_gradient")])
def test_a_misspelt_node_key_is_refused_naming_the_nearest_field(config_class, key, nearest, tmp_path):
    message = rf"^{key}: not an option of {config_class.model_type}; did you mean {nearest}\? its NODE fields are "
    with pytest.raises(OptionError, match=message + r"node_adjoint_atol, .*node_ts$"):
        config_class(**{key: "euler"})
    config = config_class()
    setattr(config, key, "euler")  # after construction: caught before a model is built or the config saved
    with pytest.raises(OptionError, match=message):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


@BOTH_CONFIGS
def test_an_option_of_another_front_end_is_refused_without_a_guess(config_class):
    with pytest.raises(OptionError, match=r"^node_failure_policy: not an option of \w+; its NODE fields are "):
        config_class(node_failure_policy="skip")  # fairseq's, not the HF model's


@BOTH_CONFIGS
def test_a_misspelt_node_key_in_config_json_or_an_override_is_refused(config_class, tmp_path):
    config_class(node_method="rk4").save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path, node_method="euler").node_method == "euler"  # a real field: kept
    with pytest.raises(OptionError, match="^node_methd: .* did you mean node_method"):
        AutoConfig.from_pretrained(tmp_path, node_methd="euler")  # transformers alone would drop it silently
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "node_methd": "euler"}))
    with pytest.raises(OptionError, match="^node_methd: .* did you mean node_method"):
        AutoConfig.from_pretrained(tmp_path)


@BOTH_CONFIGS
def test_a_config_json_written_before_the_newer_node_fields_still_loads(config_class, tmp_path):
    config_class(node_method="rk4").save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    newer = ("node_initial_step", "node_plain_norm", "node_checkpoint_snapshots", "node_jacobian_weight")
    old = {key: value for key, value in saved.items() if key not in newer}
    path.write_text(json.dumps({**old, "gradient_checkpointing": False}))  # transformers 4's configs carry this key
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.node_method == "rk4" and loaded.node_initial_step == config_class().node_initial_step


#: Each config with its head and its tiny sizes.
WITH_HEADS = pytest.mark.parametrize("config_class, head, sizes", [
    (NodeTransformerConfig, NodeTransformerForConditionalGeneration, TINY),
    (NodeTransformerLMConfig, NodeTransformerForCausalLM, TINY_LM)], ids=["seq2seq", "lm"])


def _solvers(model) -> list:
    return [layer.solver for layer in model.modules() if is_ode_layer(layer)]


@WITH_HEADS
def test_a_model_is_built_from_the_options_its_config_validated_once(config_class, head, sizes, validated_options):
    config = config_class(**sizes, node_method="rk4", node_steps=2, node_kinetic_weight=0.1)
    model = head(config)
    assert len(validated_options) == 1  # in __post_init__; not again per check, stack or head
    assert config.node_options() is validated_options[0]
    assert _solvers(model) == [validated_options[0].solver()] * (sizes.get("encoder_layers", 0) + sizes["decoder_layers"])
    assert model.regularizer_weights and len(validated_options) == 1


@WITH_HEADS
def test_a_node_field_edited_after_construction_is_validated_and_used(config_class, head, sizes, validated_options,
                                                                       tmp_path):
    config = config_class(**sizes, node_method="rk4")
    config.node_method = "euler"
    config.node_ts[1] = 2.0  # in place
    solvers = _solvers(head(config))
    assert {(s.method, s.t1) for s in solvers} == {("euler", 2.0)} and len(validated_options) == 2
    config.node_method = "rk45"
    with pytest.raises(OptionError, match="^node_method: unknown method 'rk45'"):
        head(config)
    with pytest.raises(OptionError, match="^node_method: unknown method 'rk45'"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


@BOTH_CONFIGS
def test_the_kept_options_are_not_part_of_what_is_saved_or_compared(config_class, tmp_path):
    config = config_class(node_method="rk4")
    edited = config_class(node_method="euler")
    edited.node_method = "rk4"  # its options, read as euler, are not read again until asked for
    assert edited == config and edited.to_json_string() == config.to_json_string()
    for twin in (copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
        assert twin == config and twin.node_options() == config.node_options()
        twin.node_method = "midpoint"
        assert twin.node_options().method == "midpoint" and config.node_options().method == "rk4"
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_json_string() == config.to_json_string()
