"""LoRA (peft) on the NODE models, seq2seq and LM: every adapter inside the vector fields is applied and
trained (Trainer, adjoint), NFE still counted, save/reload and ``merge_and_unload`` give the same
logits, and ``generate`` through the adapter decodes with the per-stage cache as without it."""

import pytest
import torch
from datasets import Dataset
from hf_helpers import PROMPT_MASK, PROMPTS, SOURCE, tiny_lm, tiny_model
from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM, LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, Seq2SeqTrainingArguments, TrainingArguments

from node_seq.hf import LORA_TARGET_MODULES
from node_seq.hf.training import NodeSeq2SeqTrainer, NodeTrainer
from node_seq.nn.coefficients import StageGate
from node_seq.nn.fields import DecoderField, EncoderField
from node_seq.nn.layers import is_ode_layer

TARGET = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 1], [2, 10, 1, 1]])  # decoder inputs, right-padded
LABELS = torch.tensor([[5, 6, 7, 2], [8, 9, 2, -100], [10, 2, -100, -100]])


@pytest.fixture(scope="module", params=["seq2seq", "lm"])
def kind(request) -> str:
    return request.param


def build(kind: str, **overrides):
    return tiny_model(**overrides) if kind == "seq2seq" else tiny_lm(**overrides)


def inputs(kind: str, labels: bool = False) -> dict:
    if kind == "seq2seq":
        batch = dict(input_ids=SOURCE, attention_mask=SOURCE.ne(1), decoder_input_ids=TARGET)
        return {**batch, "labels": LABELS} if labels else batch
    batch = dict(input_ids=PROMPTS, attention_mask=PROMPT_MASK)
    return {**batch, "labels": PROMPTS.masked_fill(PROMPT_MASK == 0, -100)} if labels else batch


def lora(model, kind: str, target_modules=LORA_TARGET_MODULES):
    """The model with LoRA adapters whose ``B`` is not zero, so that they change the outputs from the start."""
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False,
                        task_type="SEQ_2_SEQ_LM" if kind == "seq2seq" else "CAUSAL_LM")
    return get_peft_model(model, config)


def logits(model, kind: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(kind)).logits


def adapter_parameters(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if "lora_" in name}


def field_linears(model) -> set[str]:
    """The module paths of the Linear layers inside the vector fields of ``model``."""
    return {f"{name}.{inner}" for name, field in model.named_modules() if isinstance(field, (EncoderField, DecoderField))
            for inner, module in field.named_modules() if isinstance(module, nn.Linear)}


@pytest.mark.parametrize("overrides", [dict(node_method="rk4"), dict(node_method="rk4", node_separated_decoder=True)])
def test_the_target_modules_are_the_linear_layers_of_the_fields(kind, overrides):
    model = build(kind, **overrides)
    linears = field_linears(model)
    names = {path.rsplit(".", 1)[1] for path in linears}
    separated_lm = kind == "lm" and overrides.get("node_separated_decoder", False)  # attention outside the ODE
    assert names == ({"fc1", "fc2"} if separated_lm else set(LORA_TARGET_MODULES))
    adapted = lora(model, kind)
    wrapped = {name.removeprefix("base_model.model.") for name, module in adapted.named_modules()
               if hasattr(module, "lora_A")}
    outside = wrapped - linears  # a separated decoder's self-attention, applied once per layer outside its ODE
    assert all(".self_attn." in path and ".field." not in path for path in outside)
    assert bool(outside) == overrides.get("node_separated_decoder", False)
    assert linears <= wrapped


@pytest.mark.parametrize("setting", ["backprop", "adjoint", "rk2_gated-all-linear"])
def test_every_adapter_gets_its_gradient(kind, setting):
    """Every adapter is applied (its module runs) and trained; the adjoint's gradients are backprop's
    up to the error of its backward solve (on a grid fine enough to make it small). ``all-linear``
    also wraps ``rk2_gated``'s gate, which must be called as a module rather than read as a weight."""
    method = "rk2_gated" if setting.startswith("rk2_gated") else "rk4"
    target = "all-linear" if setting.endswith("all-linear") else LORA_TARGET_MODULES
    steps = 8 if setting == "adjoint" else 2
    gradients = {}
    for gradient in ("backprop", "adjoint") if setting == "adjoint" else ("backprop",):
        model = lora(build(kind, node_method=method, node_steps=steps, node_gradient=gradient), kind, target)
        model(**inputs(kind, labels=True)).loss.backward()
        gradients[gradient] = {name: p.grad for name, p in adapter_parameters(model).items()}
        assert all(grad is not None and grad.abs().sum() > 0 for grad in gradients[gradient].values())
        assert all(p.grad is None for name, p in model.named_parameters() if "lora_" not in name)
    if setting == "adjoint":
        assert model.nfe_backward > 0  # the backward solves ran
        for name, grad in gradients["adjoint"].items():
            exact = gradients["backprop"][name]
            assert (grad - exact).norm() < 0.05 * exact.norm(), name
    if method == "rk2_gated":
        gates = [name for name, module in model.named_modules() if isinstance(module, StageGate)]
        assert gates and all(any(name.startswith(f"{gate}.gate_linear.lora_") for name in gradients["backprop"])
                             for gate in gates)


def train_dataset(kind: str) -> Dataset:
    batch = inputs(kind, labels=True)
    batch.pop("decoder_input_ids", None)  # made from the labels, as in training
    return Dataset.from_dict({key: value.long().tolist() for key, value in batch.items()})


@pytest.mark.slow
def test_the_trainer_trains_only_the_adapter_and_logs_the_nfe(kind, tmp_path):
    model = lora(build(kind, node_method="rk4"), kind)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer_class, arguments = ((NodeSeq2SeqTrainer, Seq2SeqTrainingArguments) if kind == "seq2seq"
                                else (NodeTrainer, TrainingArguments))
    args = arguments(tmp_path, max_steps=3, per_device_train_batch_size=3, learning_rate=1e-2, logging_steps=1,
                     report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, label_names=["labels"])
    data = train_dataset(kind)
    trainer = trainer_class(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    for name, p in model.named_parameters():
        changed = not torch.equal(p.detach(), before[name])
        assert changed == ("lora_" in name), name
    layers = sum(is_ode_layer(module) for module in model.modules())
    assert layers == (4 if kind == "seq2seq" else 2)
    rk4 = 4  # evaluations per layer and solve, one step
    losses = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(entry["nfe_f"] == layers * rk4 for entry in losses)
    assert trainer.evaluate()["eval_nfe"] == layers * rk4


def test_fixed_grid_and_adaptive_solves_count_every_evaluation(kind):
    for overrides in (dict(node_method="rk4", node_steps=2), dict(node_method="dopri5", node_rtol=1e-5)):
        model = lora(build(kind, **overrides), kind)
        calls = []
        for module in model.modules():
            if isinstance(module, (EncoderField, DecoderField)):
                module.register_forward_hook(lambda *_: calls.append(1))
        logits(model, kind)
        layers = sum(is_ode_layer(module) for module in model.modules())
        if overrides["node_method"] == "rk4":
            assert model.last_nfe.nfe_forward == layers * 2 * 4  # layers x steps x stages
        assert model.last_nfe.nfe_forward == len(calls) > layers * 6


def test_an_adapter_saved_and_loaded_onto_a_fresh_base_gives_the_same_logits(kind, tmp_path):
    auto, auto_peft = ((AutoModelForSeq2SeqLM, AutoPeftModelForSeq2SeqLM) if kind == "seq2seq"
                       else (AutoModelForCausalLM, AutoPeftModelForCausalLM))
    build(kind, node_method="rk4").save_pretrained(tmp_path / "base")
    adapted = lora(auto.from_pretrained(tmp_path / "base").eval(), kind)
    adapted.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter only
    expected = logits(adapted, kind)
    assert not torch.allclose(expected, logits(auto.from_pretrained(tmp_path / "base"), kind))
    reloaded = PeftModel.from_pretrained(auto.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    assert torch.equal(logits(reloaded, kind), expected)
    assert torch.equal(logits(auto_peft.from_pretrained(tmp_path / "adapter").eval(), kind), expected)


def test_merge_and_unload_gives_the_adapter_models_logits(kind, tmp_path):
    adapted = lora(build(kind, node_method="rk4"), kind)
    expected = logits(adapted, kind)
    merged = adapted.merge_and_unload()
    torch.testing.assert_close(logits(merged, kind), expected, rtol=1e-5, atol=1e-5)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path)  # node_seq's own layers again: a plain checkpoint, loaded strictly
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    assert torch.equal(logits(auto.from_pretrained(tmp_path), kind), logits(merged, kind))


def test_generate_through_the_adapter_with_the_cache_equals_without(kind):
    model = lora(build(kind, node_method="rk4", node_steps=2), kind).eval()
    batch = inputs(kind)
    batch.pop("decoder_input_ids", None)
    runs = {}
    for use_cache in (True, False):
        runs[use_cache] = model.generate(**batch, num_beams=2, max_new_tokens=5, min_new_tokens=5, use_cache=use_cache,
                                         output_scores=True, return_dict_in_generate=True)
        layers = model.config.decoder_layers
        assert model.generation_nfe.decoder.nfe_forward == 5 * layers * 2 * 4  # tokens x layers x steps x stages
    assert torch.equal(runs[True].sequences, runs[False].sequences)
    for cached, full in zip(runs[True].scores, runs[False].scores):
        finite = torch.isfinite(full)
        assert torch.equal(finite, torch.isfinite(cached))
        torch.testing.assert_close(cached[finite], full[finite], rtol=1e-5, atol=1e-5)
