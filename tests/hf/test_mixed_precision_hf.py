"""``--bf16`` (``Trainer(bf16=True)``, bfloat16 autocast on the CPU as on a GPU) trains both HF models,
on a fixed grid and with dopri5, from float32 parameters that stay float32 (issue #27)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from node_seq.hf.cli import train as train_hf
from node_seq.hf.cli import train_lm
from node_seq.text.numbers import write_task

pytestmark = pytest.mark.slow  # the HF Trainer trains each model twice

TINY_RUN = ["--vocab-size", "64", "--embed-dim", "16", "--ffn-dim", "32", "--layers", "1", "--heads", "2",
            "--dropout", "0", "--max-steps", "6", "--batch-size", "32", "--logging-steps", "2", "--eval-steps", "100",
            "--warmup-steps", "2", "--cpu"]
TRAINERS = {
    "translation": (train_hf, ["--beam", "1", "--max-target-length", "8"]),
    "language_model": (train_lm, ["--lang", "tgt"]),
}


@pytest.fixture(scope="module")
def numbers(tmp_path_factory):
    data = tmp_path_factory.mktemp("numbers")
    write_task(data, sizes={"train": 192, "valid": 8, "test": 8})
    return data


def train(trainer: str, data, out, method: str, *precision: str) -> list[dict]:
    """The training log lines of a tiny run of ``trainer`` (the test split is evaluated at the end)."""
    module, extra = TRAINERS[trainer]
    module.main(["--data", str(data), "--out", str(out), "--node-method", method, *TINY_RUN, *extra, *precision])
    return [entry for entry in json.loads((out / "log_history.json").read_text()) if "loss" in entry]


@pytest.mark.parametrize("trainer", list(TRAINERS))
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_bf16_trains_like_float32_and_keeps_float32_parameters(numbers, tmp_path, trainer, method):
    bf16 = train(trainer, numbers, tmp_path / "bf16", method, "--bf16")
    fp32 = train(trainer, numbers, tmp_path / "fp32", method)
    losses = [entry["loss"] for entry in bf16]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert all(entry["nfe_f"] > 0 for entry in bf16)
    # autocast changed the arithmetic (not the same numbers as float32), not the training
    reference = [entry["loss"] for entry in fp32]
    assert losses != reference
    assert all(abs(loss - ref) <= 0.01 * ref for loss, ref in zip(losses, reference))
    weights = load_file(tmp_path / "bf16" / "final" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
