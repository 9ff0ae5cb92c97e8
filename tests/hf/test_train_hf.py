"""``node_seq.hf.cli.train`` end to end on a tiny generated task: datasets -> Seq2SeqTrainer -> BLEU, NFE logged."""

import json

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from node_seq.hf.cli import train as train_hf
from node_seq.text.numbers import write_task


@pytest.mark.slow
def test_train_hf_smoke_run(tmp_path):
    write_task(tmp_path / "data", sizes={"train": 160, "valid": 8, "test": 8})
    results = train_hf.main([
        "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--vocab-size", "64",
        "--embed-dim", "16", "--ffn-dim", "32", "--layers", "1", "--heads", "2", "--node-method", "rk4",
        "--node-gradient", "checkpoint", "--max-steps", "6", "--batch-size", "32", "--logging-steps", "2",
        "--eval-steps", "3", "--warmup-steps", "2", "--beam", "2", "--max-target-length", "12"])
    for split in ("valid", "test"):
        assert 0.0 <= results[f"{split}_bleu"] <= 100.0
        assert results[f"{split}_nfe"] > 0  # encoder + every decoding step, per sentence
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    train_logs = [entry for entry in history if "loss" in entry]
    assert len(train_logs) == 3
    rk4_layer = 4  # one rk4 step: four evaluations per layer and solve
    assert all(entry["nfe_f"] == 2 * rk4_layer and entry["nfe_b"] > 0 for entry in train_logs)
    assert any("eval_bleu" in entry and "eval_nfe" in entry for entry in history)

    final = tmp_path / "run" / "final"
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForSeq2SeqLM.from_pretrained(final)
    batch = tokenizer(["4 0 7", "1 2"], return_tensors="pt", padding=True)
    last = batch["attention_mask"].sum(1) - 1
    assert batch["input_ids"][[0, 1], last].tolist() == [tokenizer.eos_token_id] * 2  # </s> appended, like fairseq
    generated = model.generate(**batch, num_beams=2, max_new_tokens=6)
    assert generated.shape[0] == 2


def in_a_fresh_thread(function, *args):
    """``function(*args)`` run in a new thread; its result returned, its exception re-raised here."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["result"] = function(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.mark.slow
def test_train_hf_with_torch_compile_trains_as_eager(tmp_path):
    """``--torch-compile`` end to end (the Trainer's ``torch_compile``): the same losses and NFE as
    eager from the same seed, and a saved model."""
    write_task(tmp_path / "data", sizes={"train": 128, "valid": 8, "test": 8})

    def run(name, extra):
        train_hf.main([
            "--data", str(tmp_path / "data"), "--out", str(tmp_path / name), "--vocab-size", "64",
            "--embed-dim", "16", "--ffn-dim", "32", "--layers", "1", "--heads", "2", "--node-method", "rk4",
            "--dropout", "0", "--max-steps", "4", "--batch-size", "32", "--logging-steps", "2", "--eval-steps", "4",
            "--warmup-steps", "2", "--beam", "1", "--max-target-length", "8", *extra])
        history = json.loads((tmp_path / name / "log_history.json").read_text())
        return [(entry["loss"], entry["nfe_f"]) for entry in history if "loss" in entry]

    # Compiled first, in a thread that has never run a solve (as a fresh process's Trainer):
    # the solve's thread-local state must already exist when the compiled frame guards on it.
    compiled = in_a_fresh_thread(run, "compiled", ["--torch-compile-backend", "aot_eager"])
    eager = run("eager", [])
    assert len(compiled) == len(eager) == 2
    for (loss, nfe), (eager_loss, eager_nfe) in zip(compiled, eager):
        assert abs(loss - eager_loss) <= 1e-3 * abs(eager_loss) and nfe == eager_nfe
    assert (tmp_path / "compiled" / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_train_hf_under_torchrun_with_two_cpu_processes(tmp_path):
    """HF's Trainer does the distributed part (gloo on CPU); two processes split each epoch between them."""
    import os
    import socket
    import subprocess

    from hf_helpers import REPO

    write_task(tmp_path / "data", sizes={"train": 160, "valid": 8, "test": 8})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    run = subprocess.run([
        str(REPO / ".venv" / "bin" / "torchrun"), "--nproc_per_node", "2", "--master_port", port,
        "-m", "node_seq.hf.cli.train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
        "--vocab-size", "64", "--embed-dim", "16", "--ffn-dim", "32", "--layers", "1", "--heads", "2",
        "--max-steps", "2", "--batch-size", "16", "--logging-steps", "1", "--eval-steps", "2", "--beam", "1",
        "--max-target-length", "8", "--node-method", "rk4", "--cpu"], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [entry for entry in history if "loss" in entry]
    # 160 pairs in batches of 16 per process: 5 updates per epoch on two processes (10 on one).
    assert [entry["epoch"] for entry in steps] == [0.2, 0.4]
    assert all(entry["nfe_f"] == 8 for entry in steps)  # rk4, one step, one layer per side
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "run" / "final").config.model_type == "node_transformer"


def test_limits_and_tokenizer_shared_by_both_trainers(tmp_path):
    """``--train-limit``/``--eval-limit`` keep the first examples of each split; ``--tokenizer`` is
    read as it is, and without it a BPE of ``--vocab-size`` is learnt on the training files."""
    import argparse

    from datasets import Dataset, DatasetDict

    data = DatasetDict({split: Dataset.from_dict({"i": list(range(size))})
                        for split, size in (("train", 10), ("valid", 6), ("test", 3))})
    args = argparse.Namespace(train_limit=4, eval_limit=5, tokenizer=None, vocab_size=40)
    kept = train_hf.limited(data, args)
    assert [kept[split]["i"] for split in ("train", "valid", "test")] == [[0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2]]

    write_task(tmp_path / "data", sizes={"train": 120, "valid": 2, "test": 2})
    learnt = train_hf.tokenizer_definition(args, [tmp_path / "data" / "train.src", tmp_path / "data" / "train.tgt"])
    assert len(learnt["model"]["vocab"]) == 40
    (tmp_path / "tokenizer.json").write_text(json.dumps(learnt), encoding="utf-8")
    args.tokenizer, args.vocab_size = str(tmp_path / "tokenizer.json"), 1000
    assert train_hf.tokenizer_definition(args, []) == learnt


def test_both_trainers_pass_activation_checkpointing_to_the_trainer(tmp_path):
    from node_seq.hf.cli import train_lm

    (tmp_path / "data").mkdir()  # the options are checked against existing files, not read
    (tmp_path / "data" / "train.tgt").touch()
    for trainer in (train_hf, train_lm):
        base = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
        if trainer is train_lm:
            base += ["--lang", "tgt"]
        for flags, expected in (([], False), (["--activation-checkpointing"], True)):
            args = trainer.parse_args(base + flags)
            assert train_hf.training_arguments(args, tmp_path, has_valid=False)["activation_checkpointing"] is expected
