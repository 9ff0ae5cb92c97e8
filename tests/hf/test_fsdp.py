"""Training on several processes: FSDP2 (``--fsdp``) and DDP give one process's losses, NFE and model.

Two processes with half the batch each must train as one process with the whole batch: the loss is
normalised by the update's token count (``num_items_in_batch``), the LM pads on the right, the NFE
are logged over every process, and a sharded model is saved whole.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess

import pytest
import torch
from hf_helpers import REPO, TINY_LM, tiny_model
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from node_seq.hf import NodeTransformerForCausalLM, NodeTransformerLMConfig
from node_seq.hf.cli import train as train_hf
from node_seq.hf.cli import train_lm
from node_seq.hf.training import NodeNFELogging, lm_collator
from node_seq.text.numbers import write_task

def torchrun(argv: list[str], *, processes: int = 2) -> subprocess.CompletedProcess:
    """``argv`` (after ``-m`` or a script) under torchrun on CPU processes, one thread each, with
    transformers' info messages (what it sharded)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    return subprocess.run([str(REPO / ".venv" / "bin" / "torchrun"), "--nproc_per_node", str(processes),
                           "--master_port", port, *argv], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                               "TRANSFORMERS_VERBOSITY": "info"},
                          capture_output=True, text=True, timeout=600)


# ----------------------------------------------------------------------------------------------
# the pieces: loss normalisation, LM padding, NFE over processes, the sharding plan


def _seq2seq_batch():
    torch.manual_seed(1)
    source = torch.randint(4, 40, (6, 7))
    labels = torch.randint(4, 40, (6, 5))
    labels[:3, 3:] = -100  # short targets: halves with different token counts
    return dict(input_ids=source, labels=labels)


def _lm_batch():
    torch.manual_seed(1)
    ids = torch.randint(4, 40, (6, 8))
    labels = ids.clone()
    labels[:3, 4:] = -100
    return dict(input_ids=ids, labels=labels)


@pytest.mark.parametrize("kind", ["seq2seq", "lm"])
def test_loss_with_the_update_token_count_splits_the_batch_exactly(kind):
    """Halves of a batch, each normalised by the whole batch's count of scored tokens, sum to the
    whole batch's mean loss and gradient (a mean of the halves' means would weight the short half's
    tokens more)."""
    if kind == "seq2seq":
        model, batch, scored = tiny_model(node_method="rk4").train(), _seq2seq_batch(), lambda b: b["labels"]
    else:
        torch.manual_seed(0)
        model = NodeTransformerForCausalLM(NodeTransformerLMConfig(**TINY_LM, node_method="rk4")).train()
        batch, scored = _lm_batch(), lambda b: b["labels"][:, 1:]

    def gradient(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    whole = model(**batch).loss
    whole_gradient = gradient(whole)
    count = scored(batch).ne(-100).sum()
    halves = [{key: value[rows] for key, value in batch.items()} for rows in (slice(0, 3), slice(3, 6))]
    parts = [model(**half, num_items_in_batch=count).loss for half in halves]
    mean_of_means = sum(part.detach() * count / scored(half).ne(-100).sum() for part, half in zip(parts, halves)) / 2
    assert torch.allclose(sum(parts), whole, rtol=1e-6)
    assert not torch.allclose(mean_of_means, whole, rtol=1e-4)  # the halves' token counts differ
    assert torch.allclose(gradient(sum(parts)), whole_gradient, atol=1e-6)


def test_lm_collator_starts_every_sentence_at_position_zero(tmp_path):
    """The leading ``</s>`` is never a target, in every row whatever the batch's longest; the
    tokenizer itself still pads on the left for generate's prompts."""
    from node_seq.hf.tokenization_node_transformer import LANGUAGE_MODEL, build_tokenizer
    from node_seq.text.tokenizer import train_tokenizer

    write_task(tmp_path, sizes={"train": 120, "valid": 2, "test": 2})
    learnt = train_tokenizer([tmp_path / "train.tgt"], vocab_size=60)
    tokenizer = build_tokenizer(json.loads(learnt.to_str()), kind=LANGUAGE_MODEL)
    encoded = [{"input_ids": tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]}
               for text in ("nine hundred ninety nine", "two")]
    batch = lm_collator(tokenizer)(encoded)
    assert tokenizer.padding_side == "left"
    for row, example in enumerate(encoded):
        length = len(example["input_ids"])
        assert batch["input_ids"][row, :length].tolist() == example["input_ids"]  # from position 0
        assert batch["input_ids"][row, 0].item() == tokenizer.eos_token_id
        targets = batch["labels"][row, 1:]
        assert targets[targets.ne(-100)].tolist() == example["input_ids"][1:]


class _Logged:
    """The ``Trainer`` below :class:`NodeNFELogging`: records what reaches its ``log``."""

    def __init__(self):
        self.lines = []

    def log(self, logs, *args, **kwargs):
        self.lines.append(logs)


class _OtherProcess:
    """``accelerator.reduce`` of a run whose other process counted ``other``."""

    def __init__(self, other):
        self.other = other

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        return tensor + torch.tensor(self.other, dtype=tensor.dtype)


def test_nfe_are_logged_over_every_process():
    """An adaptive solve takes its own steps on each process's part of the batch: the logged NFE are
    the mean over all processes' solves, not rank 0's."""

    class Trainer(NodeNFELogging, _Logged):
        pass

    trainer = Trainer()
    trainer.args = type("Args", (), {"world_size": 2, "device": "cpu"})()
    # forward, backward, steps; then the per-row spread (mean, sd, min, max) summed over the steps that had one
    trainer.accelerator = _OtherProcess([30, 50, 2, 12.0, 2.0, 8.0, 16.0, 1])
    trainer._train_nfe = [10, 14, 2]  # this process: two steps of 5 forward, 7 backward NFE
    trainer._row_nfe = [20.0, 4.0, 14.0, 26.0, 2]
    trainer.log({"loss": 1.0})
    assert trainer.lines[-1]["nfe_f"] == 10.0 and trainer.lines[-1]["nfe_b"] == 16.0  # (10 + 30) / 4, (14 + 50) / 4
    assert [trainer.lines[-1][key] for key in ("nfe_row_mean", "nfe_row_sd", "nfe_row_min", "nfe_row_max")] == [
        10.7, 2.0, 7.3, 14.0]  # (20 + 12) / 3, ...
    trainer.accelerator = _OtherProcess([60, 3])
    trainer._eval_nfe = [20, 1]  # one sentence at 20 NFE here, three at 20 on average there
    trainer.log({"eval_runtime": 0.1})
    assert trainer.lines[-1]["eval_nfe"] == 20.0
    assert trainer._train_nfe == [0, 0, 0] and trainer._eval_nfe == [0, 0]


def _plan_pattern(key: str) -> re.Pattern:
    return re.compile(re.escape(key).replace(r"\*", r"\d+"))


@pytest.mark.parametrize("model", [
    pytest.param(lambda: tiny_model(node_method="rk4"), id="shared-embeddings"),
    pytest.param(lambda: tiny_model(node_method="dopri5", share_all_embeddings=False), id="separate-embeddings"),
    pytest.param(lambda: NodeTransformerForCausalLM(NodeTransformerLMConfig(**TINY_LM)), id="lm"),
])
def test_fsdp_units_are_the_ode_layers(model):
    """``base_model_fsdp_plan`` (transformers' FSDP2) and ``_no_split_modules`` (accelerate's FSDP
    wrap) name exactly the ODE layers: a layer is gathered once per solve however often its field is
    called; the embeddings and ``lm_head`` (one tied weight) stay together in the root group."""
    model = model()
    layers = {name for name, module in model.named_modules() if hasattr(module, "field") and hasattr(module, "solver")}
    planned = {name for name, _ in model.named_modules() for key in model.fsdp_plan if _plan_pattern(key).fullmatch(name)}
    assert planned == layers and len(layers) == model.config.decoder_layers + getattr(model.config, "encoder_layers", 0)
    assert set(model.fsdp_plan.values()) == {"free_full_weight"}
    no_split = {name for name, module in model.named_modules() if type(module).__name__ in model._no_split_modules}
    assert no_split == layers
    in_a_layer = {name for name, _ in model.named_parameters() if any(name.startswith(layer + ".") for layer in layers)}
    assert not any("embed_tokens" in name or name.startswith("lm_head") for name in in_a_layer)


def test_fsdp_option_is_refused_with_its_allowed_values_and_without_torchrun(tmp_path, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    common = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        train_hf.parse_args([*common, "--fsdp", "hybrid_shard"])
    assert "--fsdp: invalid choice: 'hybrid_shard' (choose from 'full_shard', 'shard_grad_op')" in capsys.readouterr().err
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for parse in (train_hf.parse_args, lambda argv: train_lm.parse_args([*argv, "--lang", "tgt"])):
        with pytest.raises(SystemExit):
            parse([*common, "--fsdp", "full_shard"])
        assert "--fsdp: shards over several processes; start them with torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_hf.parse_args([*common, "--fsdp", "shard_grad_op"]).fsdp == "shard_grad_op"


# ----------------------------------------------------------------------------------------------
# end to end: torchrun, two CPU processes (gloo)

TRAINERS = {
    "seq2seq": ("node_seq.hf.cli.train", train_hf.main, AutoModelForSeq2SeqLM,
                ["--beam", "1", "--max-target-length", "8", "--node-method", "rk4"]),
    "lm": ("node_seq.hf.cli.train_lm", train_lm.main, AutoModelForCausalLM,
           ["--lang", "tgt", "--layers", "2", "--node-method", "dopri5"]),
}


def _losses(run_dir):
    history = json.loads((run_dir / "log_history.json").read_text())
    return [(entry["loss"], entry["nfe_f"]) for entry in history if "loss" in entry]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TRAINERS))
def test_fsdp_on_two_cpu_processes_trains_as_one_process(kind, tmp_path):
    """``torchrun --nproc_per_node 2 ... --fsdp full_shard --cpu`` with half the batch per process:
    one process's losses, NFE and final weights (the seq2seq model shares one embedding between
    encoder, decoder and ``lm_head``; the LM runs dopri5)."""
    module, main, auto, extra = TRAINERS[kind]
    write_task(tmp_path / "data", sizes={"train": 128, "valid": 8, "test": 8})
    common = ["--data", str(tmp_path / "data"), "--vocab-size", "64", "--embed-dim", "16", "--ffn-dim", "32",
              "--layers", "1", "--heads", "2", "--dropout", "0", "--max-steps", "3", "--warmup-steps", "1",
              "--logging-steps", "1", "--eval-steps", "100", "--cpu", *extra]
    run = torchrun(["-m", module, *common, "--out", str(tmp_path / "fsdp"), "--batch-size", "8",
                    "--fsdp", "full_shard"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("FSDP2 applied to model via _fsdp_plan: 2 entries") == 2  # both layers, both processes
    main([*common, "--out", str(tmp_path / "one"), "--batch-size", "16"])

    sharded, one = _losses(tmp_path / "fsdp"), _losses(tmp_path / "one")
    assert len(sharded) == len(one) == 3
    for (loss, nfe), (one_loss, one_nfe) in zip(sharded, one):
        assert loss == pytest.approx(one_loss, rel=1e-5) and nfe == one_nfe
    saved, reference = (auto.from_pretrained(tmp_path / name / "final").eval() for name in ("fsdp", "one"))
    ids = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 11, 2, 1]])
    inputs = dict(input_ids=ids, attention_mask=ids.ne(1).long())
    if kind == "seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[2, 5, 6], [2, 7, 8]])
        assert saved.get_output_embeddings().weight is saved.get_encoder().embed_tokens.weight
    with torch.no_grad():
        assert torch.allclose(saved(**inputs).logits, reference(**inputs).logits, atol=1e-4)


@pytest.mark.slow
def test_accelerate_fsdp_is_not_applied_on_cpu(tmp_path):
    """The known limitation that ``--fsdp`` works around: ``TrainingArguments(fsdp=True)`` on CPU
    processes trains with DDP (accelerate 1.15 keeps its FSDP plugin for accelerators), and FSDP1's
    plugin cannot even be built without one. Fails the day accelerate shards on CPU."""
    run = torchrun([str(REPO / "tests" / "hf" / "accelerate_fsdp_probe.py"), str(tmp_path)])
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads((tmp_path / "probe.json").read_text())
    assert found["fsdp2"] == {"is_fsdp_enabled": False, "distributed_type": "MULTI_CPU",
                              "wrapped": "DistributedDataParallel"}
    assert found["fsdp1"].startswith("RuntimeError: There are currently no available devices found")
