"""``--task node_translation``: NFE summed over workers, the ``skip`` failure policy, two-process training."""

import json
import os
import socket
import subprocess

import pytest
import torch

pytest.importorskip("fairseq")
import node_seq.fairseq  # noqa: E402,F401  (registers the task; lets weights_only read fairseq checkpoints)

from fairseq_helpers import REPO, TINY, TRAIN, fairseq_train, make_task  # noqa: E402
from node_seq.fairseq.inprocess import parse  # noqa: E402

TASK = ["--task", "node_translation"]
# Tolerances no solver meets within two steps: every forward solve fails.
FAILING = ["--node-method", "dopri5", "--node-rtol", "1e-9", "--node-atol", "1e-9", "--node-max-num-steps", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("numbers"))


def _records(log):
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"')]


def _updates(log):
    return [r for r in _records(log) if "loss" in r and "num_updates" in r]


@pytest.mark.slow
def test_task_logs_forward_backward_and_validation_nfe(data, tmp_path):
    log = tmp_path / "train.log"
    fairseq_train(data, tmp_path / "ck", [*TASK, "--max-epoch", "1", "--node-method", "rk4", "--node-steps", "2",
                                          "--node-gradient", "checkpoint"], log_file=log)
    updates = _updates(log)
    valid = [r for r in _records(log) if "valid_loss" in r][-1]
    assert updates and all(float(u["nfe_f"]) == 16 for u in updates)  # 2 ODE layers x 2 steps x 4 stages
    assert all(float(u["nfe_b"]) == 16 for u in updates)  # checkpointing evaluates every stage again
    assert float(valid["valid_nfe_f"]) == 16 and "valid_nfe_b" not in valid


def test_reduce_metrics_averages_nfe_over_every_worker(data):
    from fairseq import options, tasks
    from fairseq.logging import metrics

    args = parse([str(data), *TINY, *TASK, "--criterion", "cross_entropy"], options.get_training_parser)
    task = tasks.setup_task(args)
    criterion = task.build_criterion(args)
    worker = {"loss": 1.0, "ntokens": 10, "nsentences": 2, "sample_size": 10}
    logging_outputs = [  # what two workers' micro-batches hand back; fairseq may also pre-sum them
        {**worker, "node_batches": 1, "nfe_f": 30, "nfe_b": 50, "node_fallbacks": 0, "node_skipped": 0},
        {**worker, "node_batches": 2, "nfe_f": 90, "nfe_b": 70, "node_fallbacks": 1, "node_skipped": 1},
    ]
    with metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(logging_outputs, criterion)
    values = agg.get_smoothed_values()
    assert values["nfe_f"] == 40 and values["nfe_b"] == 40  # (30 + 90) / 3 and (50 + 70) / 3 batches
    assert values["node_fallbacks"] == 1 and values["node_skipped"] == 1


@pytest.mark.slow
def test_skip_policy_skips_every_failing_batch_and_counts_it(data, tmp_path):
    log = tmp_path / "train.log"
    fairseq_train(data, tmp_path / "ck", [*TASK, *FAILING, "--node-failure-policy", "skip", "--max-update", "2",
                                          "--node-fallback-steps", "2"], log_file=log)
    updates = _updates(log)
    assert [float(u["node_skipped"]) for u in updates] == [1, 1]
    assert all(float(u["gnorm"]) == 0 for u in updates)  # the skipped batches gave no gradient
    assert all(float(u["nfe_f"]) == 16 and float(u["loss"]) > 0 for u in updates)  # the loss on the fallback grid
    valid = [r for r in _records(log) if "valid_loss" in r][-1]
    # validation leaves nothing out: its batches ran on the fallback grid, and it says so
    assert float(valid["valid_node_fallbacks"]) >= 1 and float(valid["valid_nfe_f"]) == 16
    assert float(valid["valid_loss"]) > 0


def test_skip_policy_steps_only_for_updates_with_a_batch_that_solved(data):
    from fairseq import options, tasks

    args = parse([str(data), *TINY, *TASK, *TRAIN, "--node-method", "rk4", "--node-failure-policy", "skip",
                  "--node-fallback-method", "euler"], options.get_training_parser)
    task = tasks.setup_task(args)
    model, criterion = task.build_model(args), task.build_criterion(args)
    task.load_dataset("train")
    batches = list(task.get_batch_iterator(task.dataset("train"), max_tokens=256).next_epoch_itr(shuffle=False))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # momentum: a zero-gradient step still moves

    class Optimizer:  # the two methods of fairseq's optimizers that the task calls
        def backward(self, loss):
            loss.backward()

        def step(self):
            sgd.step()

    def blow_up(layer):  # the layer's own rk4 solve turns non-finite; the euler fallback does not
        return layer.field.register_forward_hook(
            lambda module, inputs, out: out * float("inf") if layer.solver.method == "rk4" else out)

    def update(*batches_failing):
        sgd.zero_grad()
        before = [p.detach().clone() for p in model.parameters()]
        for batch, failing in zip(batches, batches_failing):
            hooks = [blow_up(layer) for layer in model.ode_layers()] if failing else []
            _, size, log = task.train_step(batch, model, criterion, Optimizer(), 0)
            for hook in hooks:
                hook.remove()
            assert (size == 0) == failing and log.get("node_skipped", 0) == failing
        task.optimizer_step(Optimizer(), model, 0)
        return any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))

    assert update(False)  # trains, and leaves SGD a momentum
    assert not update(True)  # every batch skipped: no step, although momentum would have moved the weights
    assert update(False, True)  # one batch of two solved: the step is taken


@pytest.mark.slow
def test_skip_policy_refuses_a_failure_in_the_backward_pass(data, tmp_path):
    with pytest.raises(RuntimeError, match="failed in the backward pass, which cannot be skipped"):
        fairseq_train(data, tmp_path / "ck", [*TASK, "--node-method", "dopri5", "--node-rtol", "1e-2",
                                              "--node-gradient", "adjoint", "--node-adjoint-rtol", "1e-12",
                                              "--node-adjoint-atol", "1e-12", "--node-max-num-steps", "30",
                                              "--node-failure-policy", "skip", "--max-update", "1",
                                              "--disable-validation"])


def test_skip_policy_needs_the_node_translation_task(data, capsys):
    from fairseq import options

    with pytest.raises(SystemExit) as info:
        parse([str(data), *TINY, "--node-failure-policy", "skip"], options.get_training_parser)
    assert "--node-failure-policy skip: needs --task node_translation" in str(info.value.code) + capsys.readouterr().err


def _train_command(data, save, extra):
    return [str(REPO / ".venv" / "bin" / "fairseq-train"), str(data), "--user-dir", "user_dir", *TINY, *TASK,
            "--node-method", "dopri5", "--node-rtol", "1e-3", "--optimizer", "adam", "--lr", "1e-3",
            "--criterion", "label_smoothed_cross_entropy", "--max-tokens", "256", "--max-update", "3",
            "--dropout", "0", "--disable-validation", "--no-epoch-checkpoints", "--seed", "2",
            "--num-workers", "0", "--cpu", "--log-format", "json", "--log-interval", "1", "--save-dir", str(save),
            *extra]


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_effective_batch(tmp_path):
    """fairseq's distributed training (gloo, launched by torchrun) against one process with --update-freq 2."""
    data = make_task(tmp_path, train_size=200)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(_train_command(data, tmp_path / "one", ["--update-freq", "2"]), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    command = " ".join(_train_command(data, tmp_path / "two", [
        "--distributed-world-size", "2", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp",
        "--distributed-init-method", "env://", "--distributed-no-spawn", "--distributed-rank", "$RANK"]))
    two = subprocess.run([str(REPO / ".venv" / "bin" / "torchrun"), "--nproc_per_node", "2", "--master_port", _free_port(),
                          "--no-python", "bash", "-c", f"exec {command}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "training on 2 devices" in two.stdout  # fairseq logs to stdout

    def logged(output):
        rows = [json.loads(line.split(" | ")[-1]) for line in output.splitlines() if ' | {"epoch"' in line]
        return [(r["loss"], r["nfe_f"], r["wpb"]) for r in rows if "loss" in r]

    assert logged(two.stdout) and logged(two.stdout) == logged(one.stdout)  # loss, NFE of all workers, words
    single = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=True)["model"]
    parallel = torch.load(tmp_path / "two" / "checkpoint_last.pt", weights_only=True)["model"]
    for name in single:
        torch.testing.assert_close(parallel[name], single[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_regularizer_weights_change_the_gradient_not_the_logged_loss(data, tmp_path):
    def first_update(weight):
        log = tmp_path / f"kinetic-{weight}.log"
        fairseq_train(data, tmp_path / f"ck-{weight}", [*TASK, "--node-method", "rk4", "--node-kinetic-weight", weight,
                                                        "--node-jacobian-weight", weight, "--max-update", "1",
                                                        "--dropout", "0",  # the Hutchinson noise draws from the RNG
                                                        "--disable-validation"], log_file=log)
        return _updates(log)[0]

    plain, penalised = first_update("0"), first_update("0.5")
    assert "node_kinetic" not in plain and float(penalised["node_kinetic"]) > 0
    assert "node_jacobian" in penalised and float(penalised["node_jacobian"]) > 0
    assert penalised["loss"] == plain["loss"]  # the criterion's loss, logged apart from the penalty
    assert penalised["gnorm"] != plain["gnorm"]  # but the penalty is differentiated


@pytest.mark.parametrize("argv,message", [
    (["--node-kinetic-weight", "-1", *TASK], "--node-kinetic-weight: must be a finite number >= 0, got -1.0"),
    (["--node-kinetic-weight", "nan", *TASK], "--node-kinetic-weight: must be a finite number >= 0, got nan"),
    (["--node-kinetic-weight", "0.1"], "--node-kinetic-weight: needs --task node_translation"),
    (["--node-jacobian-weight", "-2", *TASK], "--node-jacobian-weight: must be a finite number >= 0, got -2.0"),
    (["--node-jacobian-weight", "1"], "--node-jacobian-weight: needs --task node_translation"),
])
def test_bad_regularizer_weights_are_rejected_while_parsing(argv, message, data, capsys):
    from fairseq import options

    with pytest.raises(SystemExit) as info:
        parse([str(data), *TINY, *argv], options.get_training_parser)
    assert message in str(info.value.code) + capsys.readouterr().err
