"""transformers' activation checkpointing switch on both models: the gradients it gives equal those without
it (fixed grid and dopri5, dropout on, train mode, one seed), the NFE it reports, less memory, an exact
round trip through enable/disable, nothing of it in saved configs, and the Trainer's switch."""

import json
import warnings

import pytest
import torch
from hf_helpers import SOURCE, TINY
from test_lm import MASK, PROMPTS, TINY_LM

from node_seq.hf import (
    NodeTransformerConfig, NodeTransformerForCausalLM, NodeTransformerForConditionalGeneration, NodeTransformerLMConfig,
)
from node_seq.memory import LiveTensorBytes
from node_seq.nn.layers import collect_stats, transformer_layers

DROPOUT = dict(dropout=0.2, attention_dropout=0.1, activation_dropout=0.1)
SOLVERS = {
    "rk4x2": dict(node_method="rk4", node_steps=2),
    "dopri5": dict(node_method="dopri5"),
    "separated-augmented-euler": dict(node_method="euler", node_steps=2, node_separated_decoder=True,
                                      node_augment_dims=2),
    "plain-decoder": dict(node_method="midpoint", node_decoder=False),  # the LM: plain layers only
}


def seq2seq(**overrides) -> NodeTransformerForConditionalGeneration:
    torch.manual_seed(0)
    return NodeTransformerForConditionalGeneration(NodeTransformerConfig(**{**TINY, **DROPOUT, **overrides})).train()


def lm(**overrides) -> NodeTransformerForCausalLM:
    torch.manual_seed(0)
    return NodeTransformerForCausalLM(NodeTransformerLMConfig(**{**TINY_LM, **DROPOUT, **overrides})).train()


MODELS = {"seq2seq": (seq2seq, dict(input_ids=SOURCE, labels=SOURCE[:, :5].clone())),
          "lm": (lm, dict(input_ids=PROMPTS, attention_mask=MASK, labels=PROMPTS.masked_fill(MASK == 0, -100)))}


def step(model, batch: dict, seed: int = 7):
    """One forward + backward under a fixed seed: loss, gradients by name, the ODE layers' stats."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, \
        collect_stats(model)


def switch(model, on: bool, **kwargs) -> None:
    with warnings.catch_warnings():  # the gradient_* names are transformers 5's deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable(**kwargs) if on else model.gradient_checkpointing_disable()


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
@pytest.mark.parametrize("kind", MODELS)
def test_gradients_with_checkpointing_equal_gradients_without(kind, solver):
    build, batch = MODELS[kind]
    model = build(**solver)
    loss, grads, stats = step(model, batch)
    switch(model, True)
    assert model.is_activation_checkpointing
    loss_on, grads_on, stats_on = step(model, batch)
    torch.testing.assert_close(loss_on, loss, rtol=0, atol=0)
    assert grads_on.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_on[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)
    # The recompute is the backward pass's work: forward NFE unchanged, every forward solve once more.
    assert (stats_on.nfe_forward, stats_on.nfe_backward) == (stats.nfe_forward, stats.nfe_forward)
    assert stats_on.num_steps == stats.num_steps and stats.nfe_backward == 0


@pytest.mark.parametrize("options", [dict(activation_checkpointing_kwargs={"use_reentrant": True}), dict(offload=True)],
                         ids=["reentrant", "offload"])
def test_transformers_checkpoint_options_reach_the_layers(options):
    model = seq2seq(node_method="dopri5")
    batch = MODELS["seq2seq"][1]
    _, grads, stats = step(model, batch)
    model.activation_checkpointing_enable(**options)
    _, grads_on, stats_on = step(model, batch)
    assert grads_on.keys() == grads.keys() and stats_on.nfe_backward == stats.nfe_forward > 0
    for name in grads:
        torch.testing.assert_close(grads_on[name], grads[name], rtol=1e-6, atol=1e-7, msg=name)


def test_the_recompute_sees_the_same_dropout_masks_only_because_the_rng_is_replayed():
    """The test above can fail: without the RNG replayed, the recompute draws other masks."""
    model = seq2seq(node_method="rk4")
    _, grads, _ = step(model, MODELS["seq2seq"][1])
    switch(model, True, gradient_checkpointing_kwargs=dict(use_reentrant=False, preserve_rng_state=False))
    _, grads_on, _ = step(model, MODELS["seq2seq"][1])
    assert any(not torch.allclose(grads_on[name], grads[name]) for name in grads)


def test_regularised_training_is_unchanged_and_keeps_its_integrals():
    model = seq2seq(node_method="rk4", node_kinetic_weight=0.5, node_jacobian_weight=0.1)
    batch = MODELS["seq2seq"][1]
    loss, grads, _ = step(model, batch)
    switch(model, True)
    loss_on, grads_on, _ = step(model, batch)
    torch.testing.assert_close(loss_on, loss)
    for name in grads:
        torch.testing.assert_close(grads_on[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_layers_with_their_own_gradient_mode_are_left_as_they_are():
    """adjoint/reversible/checkpoint already keep no per-step activations: no second forward solve."""
    model = seq2seq(node_method="rk4", node_gradient="adjoint")
    batch = MODELS["seq2seq"][1]
    loss, grads, stats = step(model, batch)
    switch(model, True)
    loss_on, grads_on, stats_on = step(model, batch)
    assert (stats_on.nfe_forward, stats_on.nfe_backward) == (stats.nfe_forward, stats.nfe_backward) != (0, 0)
    for name in grads:
        torch.testing.assert_close(grads_on[name], grads[name], msg=name)
    assert model.config.node_gradient == "adjoint"


def peak_bytes(model, batch) -> int:
    torch.manual_seed(7)
    with LiveTensorBytes() as tracker:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return tracker.peak


@pytest.mark.slow  # a training step's peak memory, measured per configuration
@pytest.mark.parametrize("kind", MODELS)
def test_checkpointing_lowers_the_peak_memory_of_a_training_step(kind):
    build, batch = MODELS[kind]
    model = build(node_method="rk4", node_steps=4)
    peak_bytes(model, batch)  # a first pass allocates a few bytes once
    off = peak_bytes(model, batch)
    switch(model, True)
    on = peak_bytes(model, batch)
    switch(model, False)
    assert on < 0.8 * off and peak_bytes(model, batch) == off


def test_enable_then_disable_restores_the_model_exactly(tmp_path):
    model = seq2seq(node_method="rk4")
    batch = MODELS["seq2seq"][1]
    before = step(model, batch)
    hooks_before = dict(model.get_input_embeddings()._forward_hooks)
    switch(model, True)
    assert all(layer.gradient_checkpointing for layer in transformer_layers(model))
    model.save_pretrained(tmp_path / "on")
    switch(model, False)
    assert not model.is_activation_checkpointing
    assert dict(model.get_input_embeddings()._forward_hooks) == hooks_before  # transformers' hook removed again
    after = step(model, batch)
    assert after[2] == before[2]  # NFE: no recompute any more
    for name in before[1]:
        torch.testing.assert_close(after[1][name], before[1][name], rtol=0, atol=0)
    model.save_pretrained(tmp_path / "off")
    # Nothing of the switch is saved: the config is the same either way, and a reloaded model starts off.
    saved = json.loads((tmp_path / "on" / "config.json").read_text())
    assert saved == json.loads((tmp_path / "off" / "config.json").read_text())
    assert "gradient_checkpointing" not in saved and saved["node_gradient"] == "backprop"
    assert not NodeTransformerForConditionalGeneration.from_pretrained(tmp_path / "on").is_activation_checkpointing


def test_every_n_layers_counts_encoder_then_decoder_layers_and_a_bad_value_is_refused():
    model = seq2seq(node_method="rk4")
    model.activation_checkpointing_enable(every_n_layers=3)
    assert [layer.gradient_checkpointing for layer in transformer_layers(model)] == [True, False, False, True]
    with pytest.raises(ValueError, match="^every_n_layers: must be an integer >= 1, got 0$"):
        model.activation_checkpointing_enable(every_n_layers=0)


def test_generation_and_evaluation_are_untouched_by_the_switch():
    model = lm(node_method="rk4").eval()
    expected = model.generate(PROMPTS, attention_mask=MASK, max_new_tokens=4, do_sample=False)
    switch(model, True)
    torch.testing.assert_close(model.generate(PROMPTS, attention_mask=MASK, max_new_tokens=4, do_sample=False),
                               expected)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradient_checkpointing", "activation_checkpointing"])
def test_the_trainers_switch_trains_as_without_it(tmp_path, name):
    """``TrainingArguments(gradient_checkpointing=True)`` (transformers 5's alias) and its new name: the same
    weights after three updates from one seed, with the recompute logged as backward NFE."""
    from datasets import Dataset
    from transformers import TrainingArguments, default_data_collator

    from node_seq.hf.training import NodeTrainer

    torch.manual_seed(1)
    ids = torch.randint(4, TINY_LM["vocab_size"], (12, 6))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})

    def train(checkpointing: bool):
        model = lm(node_method="rk4")
        with warnings.catch_warnings():  # gradient_checkpointing is transformers 5's deprecated alias
            warnings.simplefilter("ignore", FutureWarning)
            args = TrainingArguments(output_dir=str(tmp_path / str(checkpointing)), max_steps=3, learning_rate=1e-2,
                                     per_device_train_batch_size=4, logging_steps=1, report_to=[], save_strategy="no",
                                     seed=3, disable_tqdm=True, use_cpu=True, **{name: checkpointing})
            trainer = NodeTrainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
            trainer.train()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        return model, logs

    plain, plain_logs = train(False)
    checkpointed, logs = train(True)
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    assert [entry["loss"] for entry in logs] == pytest.approx([entry["loss"] for entry in plain_logs], rel=1e-5)
    assert all(entry["nfe_b"] == entry["nfe_f"] > 0 for entry in logs) and plain_logs[0]["nfe_b"] == 0
    for (name_, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name_)
