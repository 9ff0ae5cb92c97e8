"""The fairseq plugin end to end: every configuration trains, generates, logs NFE, resumes."""

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_helpers import REPO, TINY, fairseq_generate, fairseq_train, make_task, summary_lines  # noqa: E402
from node_seq.text.generate_log import read_nfe  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("numbers"))


def _records(log, kind):
    """fairseq's JSON log lines of one kind: per update (train_inner), per epoch (train), valid."""
    records = []
    for line in log.read_text().splitlines():
        if line.startswith('{"'):
            records.append(json.loads(line))
    if kind == "train_inner":
        return [r for r in records if "loss" in r]
    return [r for r in records if f"{kind}_loss" in r]


CONFIGS = {
    "both-rk4": ["--node-method", "rk4"],
    "encoder-only": ["--no-node-decoder", "--node-method", "midpoint", "--node-steps", "2"],
    "decoder-only-adjoint": ["--no-node-encoder", "--node-method", "rk4", "--node-gradient", "adjoint"],
    "neither": ["--no-node-encoder", "--no-node-decoder"],
    "separated-decoder": ["--node-separated-decoder", "--node-method", "heun"],
    "augmented-time-dependent": ["--node-augment-dims", "4", "--node-time-dependent", "--node-method", "euler",
                                 "--node-steps", "2"],
    "dopri5-adjoint-seminorm": ["--node-method", "dopri5", "--node-rtol", "0.01", "--node-atol", "0.001",
                                "--node-gradient", "adjoint", "--node-seminorm"],
    "checkpoint": ["--node-method", "rk4", "--node-gradient", "checkpoint"],
    "checkpoint-snapshots": ["--node-method", "midpoint", "--node-steps", "5", "--node-gradient", "checkpoint",
                             "--node-checkpoint-snapshots", "1"],
    "reversible-heun": ["--node-method", "reversible_heun", "--node-steps", "3", "--node-gradient", "reversible"],
    "reversed-euler": ["--node-method", "euler", "--node-steps", "3", "--node-gradient", "reversible"],
}
BACKWARD_EVALUATES = {"decoder-only-adjoint", "dopri5-adjoint-seminorm", "checkpoint", "checkpoint-snapshots",
                      "reversible-heun", "reversed-euler"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trains_logs_nfe_and_generates(name, data, tmp_path):
    log = tmp_path / "train.log"
    fairseq_train(data, tmp_path / "ck", ["--max-update", "3", "--disable-validation", *CONFIGS[name]], log_file=log)
    updates = _records(log, "train_inner")
    assert len(updates) == 3 and all(float(u["loss"]) > 0 for u in updates)
    if name == "neither":
        assert "nfe_f" not in updates[-1]
    else:
        assert float(updates[-1]["nfe_f"]) > 0
        assert (float(updates[-1]["nfe_b"]) > 0) == (name in BACKWARD_EVALUATES)

    output = fairseq_generate(data, tmp_path / "ck" / "checkpoint_last.pt")
    assert sum(line.startswith("H-") for line in output.splitlines()) == 12
    assert (read_nfe(output) == 0) == (name == "neither")  # plain layers evaluate no vector field




@pytest.mark.slow
def test_validation_reports_its_own_nfe(data, tmp_path):
    log = tmp_path / "train.log"
    fairseq_train(data, tmp_path / "ck", ["--max-epoch", "1", "--node-method", "rk4", "--node-steps", "2"], log_file=log)
    valid, train = _records(log, "valid")[-1], _records(log, "train")[-1]
    assert float(valid["valid_nfe_f"]) == 16  # 2 ODE layers x 2 steps x 4 stages
    assert float(train["train_nfe_f"]) == 16 and float(train["train_nfe_b"]) == 0


@pytest.mark.slow
def test_resume_from_checkpoint(data, tmp_path):
    save = tmp_path / "ck"
    fairseq_train(data, save, ["--max-update", "2", "--disable-validation", "--node-method", "rk4"])
    log = tmp_path / "resume.log"
    fairseq_train(data, save, ["--max-update", "4", "--disable-validation", "--node-method", "rk4",
                               "--restore-file", str(save / "checkpoint_last.pt")], log_file=log)
    # It picked up at update 3: the checkpoint's optimizer state and counters were restored.
    assert [int(r["num_updates"]) for r in _records(log, "train_inner")] == [3, 4]


@pytest.mark.parametrize("argv,message", [
    (["--node-method", "rk5"], "argument --node-method: invalid choice: 'rk5'"),
    (["--node-gradient", "magic"], "argument --node-gradient: invalid choice: 'magic'"),
    (["--node-rtol", "-1"], "--node-rtol: must be a finite number > 0, got -1.0"),
    (["--node-atol", "0"], "--node-atol: must be a finite number > 0, got 0.0"),
    (["--node-ts", "1,0"], "--node-ts: time points must be finite and strictly increasing"),
    (["--node-steps", "0", "--node-method", "rk4"], "--node-steps: must be an integer >= 1, got 0"),
    (["--node-augment-dims", "3"], "--node-augment-dims: encoder width 16 + 3 augmented dims is not divisible by "
                                   "--encoder-attention-heads 4; use a value such as 0, 4, 8, 12"),
    (["--node-method", "rk4", "--node-gradient", "reversible"], "--node-method: gradient 'reversible' runs only"),
    (["--node-method", "dopri5", "--node-gradient", "checkpoint"], "'checkpoint' needs a fixed-grid method"),
    (["--no-node-decoder", "--node-separated-decoder"], "--node-separated-decoder: needs --node-decoder"),
    (["--node-method", "rk4", "--node-checkpoint-snapshots", "2"],
     "--node-checkpoint-snapshots: applies only to gradient 'checkpoint', not 'backprop'"),
])
def test_bad_options_are_rejected_while_parsing(argv, message, data, capsys):
    from fairseq import options

    import node_seq.fairseq  # noqa: F401

    with pytest.raises(SystemExit) as info:
        options.parse_args_and_arch(options.get_training_parser(), [str(data), *TINY, *argv])
    assert message in str(info.value.code) + capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--bf16", "--memory-efficient-bf16"])
def test_fairseq_bf16_without_torch_xla_is_refused_while_parsing(flag, data, capsys):
    """fairseq's --bf16 implies --tpu; without torch_xla fairseq itself fails only once the model is built,
    with an AttributeError on ``xla_device``."""
    import importlib.util

    from fairseq import options

    import node_seq.fairseq  # noqa: F401

    if importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed: fairseq's --bf16 can train on its TPU")
    with pytest.raises(SystemExit) as info:
        options.parse_args_and_arch(options.get_training_parser(), [str(data), *TINY, "--cpu", flag])
    assert "node_transformer: error: --bf16: fairseq's --bf16 trains on a TPU" in str(info.value.code)


@pytest.mark.slow
def test_fairseq_train_cli_stops_before_anything_is_written(data, tmp_path):
    save = tmp_path / "never"
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "fairseq-train"), str(data), "--user-dir", "user_dir", *TINY,
         "--save-dir", str(save), "--max-update", "1", "--node-rtol", "-0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "node_transformer: error: --node-rtol: must be a finite number > 0, got -0.5" in result.stderr
    assert not save.exists()


def _parsed(data, argv):
    from fairseq import options, tasks

    import node_seq.fairseq  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), [str(data), *TINY, *argv])
    return tasks.setup_task(args), args


def _build(data, argv):
    task, args = _parsed(data, argv)
    return task, task.build_model(args)


def test_build_model_validates_the_options_once_and_hands_them_to_both_stacks(data, validated_options):
    from node_seq.fairseq.model import NodeTransformerModel

    task, args = _parsed(data, ["--node-method", "rk4", "--node-steps", "2"])
    validated_options.clear()  # the architecture function validated them while parsing (and does before a build)
    model = NodeTransformerModel.build_model(args, task)
    assert len(validated_options) == 1
    assert model.encoder.node_options is model.decoder.node_options is validated_options[0]
    assert [layer.solver for layer in model.ode_layers()] == [validated_options[0].solver()] * 2
    with pytest.raises(RuntimeError, match="built by NodeTransformerModel.build_model"):
        type(model).build_encoder(args, task.source_dictionary, model.encoder.embed_tokens)


def test_gradient_reaches_the_encoder_when_only_the_decoder_is_an_ode(data):
    task, model = _build(data, ["--no-node-encoder", "--node-method", "rk4", "--node-gradient", "adjoint"])
    src = torch.tensor([[5, 6, 7, 2]])
    prev = torch.tensor([[2, 8, 9]])
    out, _ = model(src, torch.tensor([4]), prev)
    out.logsumexp(-1).sum().backward()
    encoder_grads = [p.grad for n, p in model.encoder.layers.named_parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in encoder_grads)


def test_one_euler_step_layers_are_ode_layers_and_plain_ones_are_not(data):
    _, model = _build(data, ["--node-method", "euler", "--node-steps", "1", "--no-node-decoder"])
    assert len(model.ode_layers()) == len(model.encoder.layers)  # the encoder's, not the plain decoder's
    model(torch.tensor([[5, 6, 7, 2]]), torch.tensor([4]), torch.tensor([[2, 8, 9]]))
    assert [layer.last_stats.nfe_forward for layer in model.ode_layers()] == [1] * len(model.encoder.layers)


def test_only_a_model_prepared_for_inference_counts_generation_nfe(data):
    """fairseq-generate calls ``prepare_for_inference_`` before it decodes; eval mode without gradients
    alone (validation, a parity test) counts nothing towards the NODE NFE line."""
    import argparse

    _, model = _build(data, ["--node-method", "rk4", "--node-steps", "1"])
    src, lengths = torch.tensor([[5, 6, 7, 2], [8, 9, 10, 2]]), torch.tensor([4, 4])
    prev = torch.tensor([[2, 8, 9], [2, 11, 12]])

    def decode():
        with torch.no_grad():
            encoder_out = model.encoder(src, src_lengths=lengths)
            state: dict = {}
            for i in range(prev.shape[1]):
                model.decoder(prev[:, :i + 1], encoder_out=encoder_out, incremental_state=state)

    model.eval()
    decode()
    assert model.decoder.generation_nfe is None
    model.prepare_for_inference_(argparse.Namespace(generation=argparse.Namespace(beam=1)))
    decode()
    # rk4 with one step: 4 evaluations per ODE layer and solve; one encoder solve and 3 decoding steps
    assert model.decoder.generation_nfe.per_sentence().tolist() == [4 + 3 * 4] * 2


def test_the_nfe_line_is_reported_once_per_generate_run():
    """A second run in the same process (e.g. of fairseq's own transformer) does not repeat the last count."""
    from node_seq.fairseq.nfe_logging import count_generation_nfe
    from node_seq.text.generate_log import nfe_line

    counter = count_generation_nfe()
    counter.start_batch(torch.tensor([3.0, 7.0]))
    assert summary_lines("Translated 2 sentences", "Translated 3 sentences") == [
        nfe_line([3.0, 7.0]), "Translated 2 sentences", "Translated 3 sentences"]


@pytest.mark.parametrize("argv", [["--node-method", "rk4", "--node-steps", "2"],
                                  ["--node-method", "dopri5", "--node-rtol", "1e-4"],
                                  ["--node-method", "rk4", "--no-node-incremental-cache"]])
def test_incremental_decoder_logits_equal_full_decoding(data, argv):
    task, model = _build(data, argv)
    model.eval()
    src = torch.tensor([[1, 5, 6, 7, 2], [9, 10, 11, 12, 2]])  # left-padded like fairseq's sources
    prev = torch.tensor([[2, 8, 9, 10, 11], [2, 12, 13, 14, 15]])
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths=torch.tensor([4, 5]))
        full, _ = model.decoder(prev, encoder_out=encoder_out)
        state: dict = {}
        steps = [model.decoder(prev[:, :i + 1], encoder_out=encoder_out, incremental_state=state)[0]
                 for i in range(prev.shape[1])]
    incremental = torch.cat(steps, dim=1)
    if "dopri5" in argv:  # each token's solve sees its own prefix: compare with decoding that prefix
        with torch.no_grad():
            full = torch.cat([model.decoder(prev[:, :i + 1], encoder_out=encoder_out)[0][:, -1:]
                              for i in range(prev.shape[1])], dim=1)
    torch.testing.assert_close(incremental, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_failure_policy_fallback_keeps_training_and_counts_it(data, tmp_path):
    log = tmp_path / "train.log"
    fairseq_train(data, tmp_path / "ck", ["--max-update", "2", "--disable-validation", "--node-method", "dopri5",
                                          "--node-rtol", "1e-9", "--node-atol", "1e-9", "--node-max-num-steps", "2",
                                          "--node-failure-policy", "fallback", "--node-fallback-steps", "2"],
                  log_file=log)
    updates = _records(log, "train_inner")
    assert len(updates) == 2
    assert all(float(u["node_fallbacks"]) == 2 for u in updates)  # both ODE layers, every update
    assert all(float(u["nfe_f"]) == 16 for u in updates)  # rk4 x 2 steps x 2 layers


@pytest.mark.slow
def test_failure_policy_raise_names_the_layer(data, tmp_path):
    from node_seq.ode import MaxStepsExceeded

    with pytest.raises(MaxStepsExceeded, match=r"^encoder\.layers\.0: max_num_steps exceeded \(method=dopri5"):
        fairseq_train(data, tmp_path / "ck", ["--max-update", "1", "--disable-validation", "--node-method", "dopri5",
                                              "--node-rtol", "1e-9", "--node-atol", "1e-9", "--node-max-num-steps", "2"])


@pytest.mark.slow
def test_checkpoints_with_other_pickled_objects_are_refused(data, tmp_path):
    import os
    import pickle

    from fairseq import checkpoint_utils

    import node_seq.fairseq  # noqa: F401  (allow-lists exactly argparse.Namespace)

    save = tmp_path / "ck"
    fairseq_train(data, save, ["--max-update", "1", "--disable-validation", "--node-method", "euler"])
    good = save / "checkpoint_last.pt"
    assert checkpoint_utils.load_checkpoint_to_cpu(str(good))["model"]  # the real one loads, weights_only
    state = torch.load(good, weights_only=True)
    state["extra_state"]["payload"] = os.system  # what a malicious file would smuggle in
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    with pytest.raises(pickle.UnpicklingError, match="unsupported GLOBAL posix.system"):
        checkpoint_utils.load_checkpoint_to_cpu(str(crafted))


@pytest.mark.slow
def test_options_are_listed_with_their_defaults():
    result = subprocess.run([sys.executable, "-m", "node_seq.fairseq.options"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, check=True)
    text = " ".join(result.stdout.split())
    for option in ("--node-encoder", "--node-decoder", "--node-rtol", "--node-atol", "--node-ts",
                   "--node-augment-dims", "--node-time-dependent", "--node-separated-decoder", "--node-method",
                   "--node-steps", "--node-step-size", "--node-gradient", "--node-adjoint-rtol", "--node-seminorm",
                   "--node-checkpoint-snapshots", "--node-max-num-steps", "--node-failure-policy", "--node-initial-step"):
        assert option in text
    assert "relative tolerance of adaptive methods (default: 0.001)" in text
    assert "integration interval of every ODE block (default: 0,1)" in text


@pytest.mark.slow
def test_node_compile_trains_and_generates_as_eager_does(data, tmp_path, monkeypatch):
    """``--node-compile``: the layers compiled (aot_eager here, inductor by default), the same losses, NFE
    and translations as the uncompiled model; a checkpoint written compiled decodes uncompiled too."""
    from node_seq.fairseq import model as fairseq_model

    monkeypatch.setattr(fairseq_model, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    argv = ["--max-update", "1", "--disable-validation", "--dropout", "0", "--node-method", "midpoint",
            "--node-gradient", "checkpoint"]
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--node-compile"])):
        log = tmp_path / f"{name}.log"
        fairseq_train(data, tmp_path / name, [*argv, *extra], log_file=log)
        runs[name] = _records(log, "train_inner")
    for eager, compiled in zip(runs["eager"], runs["compiled"]):
        assert float(compiled["loss"]) == pytest.approx(float(eager["loss"]), abs=2e-3)  # fairseq rounds to 3 places
        assert (compiled["nfe_f"], compiled["nfe_b"]) == (eager["nfe_f"], eager["nfe_b"])
    checkpoint = tmp_path / "compiled" / "checkpoint_last.pt"
    compiled_out = fairseq_generate(data, checkpoint)
    eager_out = fairseq_generate(data, checkpoint, ["--model-overrides", "{'node_compile': False}"])
    hypotheses = [line for line in compiled_out.splitlines() if line.startswith("H-")]
    assert hypotheses and hypotheses == [line for line in eager_out.splitlines() if line.startswith("H-")]
    assert read_nfe(compiled_out) == read_nfe(eager_out) > 0


@pytest.mark.slow
def test_a_compiled_pass_whose_solve_failed_is_redone_eagerly_under_the_fallback_policy(data, monkeypatch):
    """``--node-compile --node-failure-policy fallback``: a compiled solve cannot fall back inside its
    graph, so when the pass's finiteness check reports a failure the model redoes the whole pass
    eagerly; the output is then eager's, and each layer's input is recorded for one pass only."""
    from node_seq.fairseq import model as fairseq_model
    from node_seq.ode import NonFiniteState

    monkeypatch.setattr(fairseq_model, "COMPILE_OPTIONS", {"backend": "aot_eager"})
    argv = ["--dropout", "0", "--node-method", "midpoint", "--node-failure-policy", "fallback"]
    torch.manual_seed(0)
    _, eager = _build(data, argv)
    torch.manual_seed(0)
    _, compiled = _build(data, [*argv, "--node-compile"])
    compiled.load_state_dict(eager.state_dict())
    checks = []
    real_check = fairseq_model.check_finite

    def failure():
        return NonFiniteState(method="midpoint", rtol=None, atol=None, t_reached=None, t1=1.0, nfe=2,
                              where="encoder.layers.0")

    def first_check_fails(module):  # as check_finite reports a compiled solve that ended in inf
        checks.append(torch.compiler.is_compiling())
        if len(checks) == 1:
            raise failure()
        real_check(module)

    monkeypatch.setattr(fairseq_model, "check_finite", first_check_fails)
    solves = []  # per layer solve run in Python: True while dynamo traces it, False when eager
    layers = [*compiled.encoder.layers, *compiled.decoder.layers]
    for layer in layers:
        def integrate(*args, _integrate=layer.integrate, **kwargs):
            solves.append(torch.compiler.is_compiling())
            return _integrate(*args, **kwargs)
        layer.integrate = integrate
    src, lengths, prev = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 1]]), torch.tensor([4, 3]), torch.tensor([[2, 8, 9]] * 2)
    out = compiled(src, lengths, prev)[0]
    assert len(checks) == 3  # the compiled pass stopped at the encoder's check; encoder and decoder redone
    encoder_layers = len(compiled.encoder.layers)
    assert solves == [True] * encoder_layers + [False] * len(layers)  # traced, then every layer eager
    torch.testing.assert_close(out, eager(src, lengths, prev)[0], rtol=1e-5, atol=1e-6)
    out.sum().backward()  # the redone pass's graph is the one that trains
    assert all(p.grad is not None for p in compiled.encoder.layers.parameters())

    def every_check_fails(module):
        raise failure()

    monkeypatch.setattr(fairseq_model, "check_finite", every_check_fails)
    _, raising = _build(data, [*argv[:-2], "--node-compile"])
    with pytest.raises(NonFiniteState, match=r"^encoder\.layers\.0: "):  # policy raise: no second pass
        raising(src, lengths, prev)
