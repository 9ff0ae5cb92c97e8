"""The training script: validation at the door, outputs, resume exactness, refinement, adaptation."""

import json
import os

import pytest
import torch
import yaml

from vision.checkpoint import load_checkpoint
from vision.evaluate import evaluate, load_run
from vision.models import create_model
from vision.train import initialize_from, main

SPHERES = {"dataset": "spheres2", "n_train": 48, "n_test": 24, "model": "simple_odenet",
           "model_args": {"width": 4}, "method": "euler", "steps": 2, "epochs": 2, "batch_size": 16,
           "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "progress": "none"}
DIGITS = {"dataset": "digits", "train_subset": 48, "test_subset": 24, "val_fraction": 0.25, "model": "continuousnet",
          "model_args": {"width": 2, "pieces": [1, 1, 1]}, "method": "euler", "steps": 1, "epochs": 3,
          "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "progress": "none"}


def write_config(tmp_path, values, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def train(tmp_path, values, *extra, out="run"):
    config = write_config(tmp_path, values)
    return main(["--config", config, "--output-dir", str(tmp_path / out), *extra])


@pytest.mark.parametrize("extra,message", [
    (["--model", "odenet5"], "--model: unknown value 'odenet5'; choose one of continuousnet, odenet, odenet10"),
    (["--method", "rk5"], "--method: unknown method 'rk5'; choose one of euler, midpoint, heun, rk4"),
    (["--model-args", '{"norm": "bn-gn"}'], "model_args.norm: cannot read 'gn'"),
    (["--model-args", "depth=3"], "model 'simple_odenet' has no option 'depth'; its options are width, norm, activation"),
    (["--lr", "-0.1"], "--lr: must be a finite number > 0, got -0.1"),
    (["--momentum", "1.5"], "--momentum: must lie in [0, 1)"),
    (["--epochs", "2.5"], "--epochs: expected an integer, got '2.5'"),
    (["--augment", "maybe"], "--augment: expected true or false, got 'maybe'"),
    (["--gradient", "reversible", "--method", "rk4"], "--method: gradient 'reversible' runs only euler, heun"),
    (["--gradient", "checkpoint", "--method", "dopri5"], "--gradient: 'checkpoint' needs a fixed-grid method"),
    (["--gradient", "magic"], "--gradient: unknown gradient mode 'magic'; choose one of backprop, checkpoint"),
    (["--steps", "0"], "--steps: must be an integer >= 1"),
    (["--checkpoint-snapshots", "2"], "--checkpoint-snapshots: applies only to gradient 'checkpoint', not 'backprop'"),
    (["--refine-epochs", "2"], "--refine-epochs: only continuousnet"),
    (["--test-factor-list", "0,1"], "--test-factor-list: factors must be numbers > 0"),
    (["--test-solver-list", "euler,rk7"], "--test-solver-list: unknown value 'rk7'"),
    (["--dataset", "cifar10"], "--data-dir: dataset 'cifar10' is read from local files"),
    (["--model", "odenet4"], "--model: 'odenet4' classifies images; for the vector dataset 'spheres2'"),
    (["--optimizer", "lbfgs"], "--optimizer: unknown value 'lbfgs'; choose one of sgd, adam, adamw"),
    (["--resume"], "--resume: no checkpoint at"),
])
def test_invalid_options_stop_before_any_file(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, SPHERES, *extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_and_bad_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(tmp_path, {**SPHERES, "step_sise": 0.1})
    assert "unknown option 'step_sise' (did you mean --step-size?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.yaml"), "--output-dir", str(tmp_path / "run")])
    assert "--config: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_run_writes_config_metrics_checkpoints_and_sweep(tmp_path):
    assert train(tmp_path, SPHERES, "--eval-solvers", "true", "--test-solver-list", "euler,rk4",
                 "--test-factor-list", "1,4", "--seed", "3") == 0
    run = tmp_path / "run"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["test_factor_list"] == [1.0, 4.0] and resolved["steps"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    for key in ("train_loss", "train_acc", "test_acc", "nfe_forward", "nfe_backward", "time_train", "time_total"):
        assert key in metrics["epochs"][0]
    assert metrics["epochs"][0]["nfe_forward"] == 2
    assert [(r["method"], r["steps"]) for r in metrics["solver_sweep"]] == [("euler", 2), ("euler", 8),
                                                                            ("rk4", 2), ("rk4", 8)]
    assert (run / "solver_sweep.png").exists() and (run / "solver_sweep.csv").exists()
    state = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["model"]["name"] == "simple_odenet"
    model, data, config, solver = load_run(str(run))
    assert evaluate(model, data, data.test)["accuracy"] == pytest.approx(metrics["epochs"][-1]["test_acc"])
    assert not [f for f in os.listdir(run) if f.startswith(".tmp")]


@pytest.mark.slow
def test_existing_run_is_not_overwritten(tmp_path, capsys):
    train(tmp_path, SPHERES)
    before = (tmp_path / "run" / "checkpoint_last.pt").read_bytes()
    with pytest.raises(SystemExit):
        train(tmp_path, SPHERES, "--epochs", "1")
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint_last.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_is_exact_across_a_refinement(tmp_path):
    config = {**DIGITS, "refine_epochs": [2]}
    train(tmp_path, config, out="straight")
    train(tmp_path, config, "--epochs", "2", out="interrupted")
    assert main(["--output-dir", str(tmp_path / "interrupted"), "--resume", "--epochs", "3"]) == 0
    a = load_checkpoint(str(tmp_path / "straight" / "checkpoint_last.pt"))
    b = load_checkpoint(str(tmp_path / "interrupted" / "checkpoint_last.pt"))
    assert a["model"]["kwargs"]["pieces"] == [2, 2, 2] == b["model"]["kwargs"]["pieces"]
    assert a["solver"]["steps"] == 2 == b["solver"]["steps"]  # refine_steps doubled it
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    def losses(state):
        return [(e["train_loss"], e["test_acc"], e["val_acc"]) for e in state["metrics"]["epochs"]]

    assert losses(a) == losses(b)
    assert a["metrics"]["refinements"] == b["metrics"]["refinements"]
    assert os.path.exists(tmp_path / "straight" / "checkpoint_best.pt")


@pytest.mark.slow
def test_step_adaptation_changes_are_logged_and_used(tmp_path):
    assert train(tmp_path, {**SPHERES, "steps": 6, "epochs": 3, "adapt_steps": True, "adapt_interval": 2,
                            "adapt_samples": 24}) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    changes = metrics["adaptation"]
    assert changes, "with agreeing solvers the adapter tries (and logs) a larger step"
    for change in changes:
        assert change["action"] in ("finer", "coarser", "at_limit") and change["iteration"] % 2 == 0
        assert change["old"] != change["new"] or change["action"] == "at_limit"
    final_steps = int(changes[-1]["new"].split("steps=")[1])
    assert metrics["epochs"][-1]["steps"] == final_steps
    assert load_checkpoint(str(tmp_path / "run" / "checkpoint_last.pt"))["solver"]["steps"] == final_steps


@pytest.mark.slow
def test_init_from_unties_a_tied_model(tmp_path, capsys):
    train(tmp_path, {**DIGITS, "epochs": 1}, out="tied")
    tied_path = str(tmp_path / "tied" / "checkpoint_last.pt")
    state = load_checkpoint(tied_path)
    tied = create_model("continuousnet", **state["model"]["kwargs"])
    tied.load_state_dict(state["state_dict"])
    untied = create_model("continuousnet", **{**state["model"]["kwargs"], "pieces": [4, 4, 4]})
    initialize_from(untied, tied_path)
    for model in (tied, untied):
        model.eval()
        model.set_solver(tied.solver.__class__(method="euler", steps=4))
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(tied(x), untied(x))
    assert train(tmp_path, {**DIGITS, "epochs": 1, "init_from": tied_path,
                            "model_args": {"width": 2, "pieces": [2, 2, 2]}}, out="untied") == 0
    with pytest.raises(SystemExit):
        train(tmp_path, {**DIGITS, "epochs": 1, "init_from": tied_path,
                         "model_args": {"width": 3, "pieces": [2, 2, 2]}}, out="bad")
    assert "--init-from" in capsys.readouterr().err and not (tmp_path / "bad").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["plain", "bar"])
def test_progress_shows_loss_accuracy_and_nfe(tmp_path, capsys, mode):
    train(tmp_path, {**SPHERES, "epochs": 1}, "--progress", mode, "--log-interval", "1")
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "epoch 1/1" in text and "acc" in text and "nfe" in text
    if mode == "plain":
        assert "iter 3/3 loss" in captured.out  # 48 examples in batches of 16
    else:
        assert "nfe=2/0" in captured.err  # tqdm's postfix
