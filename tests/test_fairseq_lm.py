"""``--arch node_transformer_lm`` end to end: training logs NFE, fairseq-eval-lm reports perplexity,
generation through the per-stage cache scores exactly what a full forward pass scores, and bad
options are refused while parsing."""

import json

import pytest
import torch

pytest.importorskip("fairseq")

from lm_helpers import TINY_LM, make_lm_data, train_lm  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_lm_data(tmp_path_factory.mktemp("numbers_lm"))


@pytest.fixture(scope="module")
def rk4_checkpoint(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("rk4_lm")
    return train_lm(data, root / "checkpoints", ["--task", "node_language_modeling", "--node-method", "rk4"],
                    log_file=root / "train.log")


def _records(log, prefix):
    records = [json.loads(line[line.find('{"'):]) for line in log.read_text().splitlines() if '{"' in line]
    return [r for r in records if f"{prefix}_loss" in r]


@pytest.mark.slow
def test_training_and_validation_log_nfe(rk4_checkpoint):
    log = rk4_checkpoint.parent.parent / "train.log"
    train, valid = _records(log, "train"), _records(log, "valid")
    assert train and valid
    assert float(train[-1]["train_nfe_f"]) == 8.0  # 2 layers x 4 rk4 stages
    assert float(train[-1]["train_nfe_b"]) == 0.0  # backprop through the solver
    assert float(valid[-1]["valid_nfe_f"]) == 8.0


@pytest.mark.slow
def test_plain_and_kinetic_runs_log_what_they_are(data, tmp_path):
    log = tmp_path / "plain.log"
    train_lm(data, tmp_path / "plain", ["--no-node-decoder"], log_file=log, updates=2)
    assert "train_nfe_f" not in _records(log, "train")[-1]  # a plain Transformer LM: no solves
    log = tmp_path / "kinetic.log"
    train_lm(data, tmp_path / "kinetic", ["--task", "node_language_modeling", "--node-method", "euler",
                                          "--node-steps", "2", "--node-kinetic-weight", "0.1"], log_file=log, updates=2)
    assert float(_records(log, "train")[-1]["train_node_kinetic"]) > 0
    assert "train_node_kinetic" not in (tmp_path / "plain.log").read_text()  # each --log-file holds its own run


@pytest.mark.slow
def test_eval_lm_reports_the_perplexity_of_the_test_set(data, rk4_checkpoint):
    from node_seq.fairseq import inprocess

    out = inprocess.eval_lm([str(data), "--path", str(rk4_checkpoint), "--sample-break-mode", "eos",
                             "--gen-subset", "test", "--max-tokens", "2000", "--num-workers", "0", "--cpu"])
    line = next(line for line in out.splitlines() if "Perplexity:" in line)
    loss, perplexity = (float(part.split(":")[-1]) for part in line.split("Loss (base 2):")[-1].split(","))
    assert perplexity == pytest.approx(2 ** loss, rel=1e-3)
    assert 1 < perplexity < 64  # trained: better than uniform over the 64-piece vocabulary


def _load(data, checkpoint, **overrides):
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data), **overrides})
    return models[0].eval(), task


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"node_method": "midpoint", "node_steps": 2}, {"node_method": "dopri5"},
                                       {"node_incremental_cache": False}],
                         ids=["rk4", "midpoint-2-steps", "dopri5", "no-cache"])
def test_beam_search_scores_equal_a_full_forward_pass(data, rk4_checkpoint, overrides):
    """SequenceGenerator decodes through the per-stage cache (fixed grids) or by re-solving the prefix
    (adaptive, or the cache switched off); every token's score is what one full pass gives it."""
    from fairseq.sequence_generator import SequenceGenerator

    model, task = _load(data, rk4_checkpoint, **overrides)
    dictionary = task.target_dictionary
    prefix = torch.tensor([[dictionary.index("▁two"), dictionary.index("▁thousand")],
                           [dictionary.index("▁nine"), dictionary.index("▁hundred")]])
    generator = SequenceGenerator([model], dictionary, beam_size=3, max_len_b=10)
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([2, 2])}}
    with torch.no_grad():
        hypotheses = generator.generate([model], sample, prefix_tokens=prefix)
        for best in (beams[0] for beams in hypotheses):
            tokens = best["tokens"]
            inputs = torch.cat([tokens.new_tensor([dictionary.eos()]), tokens[:-1]])[None]
            lprobs = model.get_normalized_probs(model(inputs), log_probs=True)[0]
            expected = lprobs.gather(1, tokens[:, None])[:, 0]
            torch.testing.assert_close(best["positional_scores"][2:], expected[2:], rtol=1e-4, atol=1e-4)
            assert tokens[:2].tolist() in prefix.tolist()


@pytest.mark.slow
def test_generate_reports_nfe_per_sentence_and_the_cache_changes_no_output(data, rk4_checkpoint):
    from node_seq.fairseq import inprocess
    from node_seq.text.generate_log import read_nfe

    def generate(extra):
        return inprocess.generate([str(data), "--task", "language_modeling", "--path", str(rk4_checkpoint),
                                   "--sample-break-mode", "eos", "--gen-subset", "test", "--max-tokens", "2000",
                                   "--num-workers", "0", "--cpu", "--beam", "2", "--prefix-size", "1",
                                   "--max-len-b", "12", "--required-batch-size-multiple", "1", *extra])

    cached, uncached = generate([]), generate(["--model-overrides", "{'node_incremental_cache': False}"])
    hypotheses = [[line.split("\t")[-1] for line in text.splitlines() if line.startswith("H-")]
                  for text in (cached, uncached)]
    assert len(hypotheses[0]) == 24 and hypotheses[0] == hypotheses[1]
    assert read_nfe(cached) > 0 and read_nfe(cached) == read_nfe(uncached)


@pytest.mark.slow
def test_interactive_continues_prompts_as_generate_continues_the_same_prefixes(data, rk4_checkpoint):
    """fairseq-interactive, the command, reading prompts from stdin: given each test sentence's first two
    pieces it writes the hypotheses and scores fairseq-generate writes with ``--prefix-size 2``."""
    import subprocess

    from fairseq_helpers import REPO
    from node_seq.fairseq import inprocess

    common = ["--task", "language_modeling", "--path", str(rk4_checkpoint), "--cpu", "--beam", "2",
              "--max-len-b", "12", "--batch-size", "1", "--num-workers", "0"]
    generated = inprocess.generate([str(data), *common, "--sample-break-mode", "eos", "--gen-subset", "test",
                                    "--prefix-size", "2"])
    expected = {}
    for line in generated.splitlines():
        if line.startswith("H-"):
            ident, score, text = line.split("\t")
            expected[int(ident[2:])] = (float(score), text)
    pieces = (data.parent / "bpe" / "test.tgt").read_text().splitlines()
    prompts = [" ".join(sentence.split()[:2]) for sentence in pieces]
    result = subprocess.run([str(REPO / ".venv" / "bin" / "fairseq-interactive"), str(data), "--user-dir",
                             str(REPO / "user_dir"), *common, "--buffer-size", "1"], cwd=REPO,
                            input="\n".join(prompts) + "\n", capture_output=True, text=True, timeout=600, check=True)
    answers = [line.split("\t") for line in result.stdout.splitlines() if line.startswith("H-")]
    assert len(answers) == len(pieces) and len(expected) >= len(pieces) - 2  # generate may skip a short one
    for ident, score, text in answers:
        if int(ident[2:]) in expected:
            assert text == expected[int(ident[2:])][1]
            assert float(score) == pytest.approx(expected[int(ident[2:])][0], abs=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--node-encoder"], "unrecognized arguments: --node-encoder"),
    (["--node-method", "rk5"], "argument --node-method: invalid choice: 'rk5'"),
    (["--node-steps", "0", "--node-method", "rk4"], "--node-steps: must be an integer >= 1, got 0"),
    (["--node-augment-dims", "3"], "--node-augment-dims: decoder width 16 + 3 augmented dims is not divisible by "
                                   "--decoder-attention-heads 2"),
    (["--node-kinetic-weight", "0.1"], "--node-kinetic-weight: needs --task node_language_modeling"),
    (["--node-failure-policy", "skip"], "--node-failure-policy skip: needs --task node_language_modeling"),
    (["--no-node-decoder", "--node-separated-decoder"], "--node-separated-decoder: needs --node-decoder"),
    (["--adaptive-input"], "--adaptive-input: not supported by node_transformer_lm"),
])
def test_bad_options_are_refused_while_parsing_naming_the_option(argv, message, data, capsys):
    from fairseq import options

    import node_seq.fairseq  # noqa: F401

    with pytest.raises(SystemExit) as info:
        options.parse_args_and_arch(options.get_training_parser(),
                                    [str(data), "--task", "language_modeling", *TINY_LM, *argv])
    assert message in str(info.value.code) + capsys.readouterr().err


def test_build_model_validates_the_options_once_and_hands_them_to_the_layers(data, validated_options):
    from fairseq import options, tasks

    from node_seq.fairseq.lm import NodeTransformerLanguageModel

    args = options.parse_args_and_arch(options.get_training_parser(),
                                       [str(data), "--task", "language_modeling", *TINY_LM, "--node-method", "rk4"])
    task = tasks.setup_task(args)
    validated_options.clear()  # the architecture function validated them while parsing (and does before a build)
    model = NodeTransformerLanguageModel.build_model(args, task)
    assert len(validated_options) == 1 and model.decoder.node_options is validated_options[0]
    assert [layer.solver for layer in model.ode_layers()] == [validated_options[0].solver()] * 2


@pytest.mark.slow
def test_elastic_depth_sweep_scores_what_eval_lm_scores(data, rk4_checkpoint, tmp_path):
    """The sweep's evaluation at the trained solver is fairseq-eval-lm's perplexity; other solvers
    change the NFE as their grids say, and the layers keep their trained solver afterwards."""
    from node_seq.fairseq import elastic_lm, inprocess

    model, task = _load(data, rk4_checkpoint)
    task.load_dataset("test")
    rows = elastic_lm.sweep(model, task, "test", methods=["rk4", "euler"], factors=[1.0, 2.0])
    out = inprocess.eval_lm([str(data), "--path", str(rk4_checkpoint), "--sample-break-mode", "eos",
                             "--gen-subset", "test", "--max-tokens", "2000", "--num-workers", "0", "--cpu"])
    expected = float(out.rsplit("Perplexity:", 1)[1].split()[0])
    trained = next(r for r in rows if r["trained"])
    assert trained["perplexity"] == pytest.approx(expected, abs=0.01)
    assert [(r["method"], r["steps"], r["nfe"]) for r in rows] == [
        ("rk4", 1, 8.0), ("rk4", 2, 16.0), ("euler", 1, 2.0), ("euler", 2, 4.0)]
    assert all(layer.solver.method == "rk4" and layer.solver.steps == 1 for layer in model.decoder.layers)
    elastic_lm.write(rows, tmp_path, title="test")
    assert (tmp_path / "elastic.csv").read_text().count("\n") == 5 and (tmp_path / "elastic.md").exists()
    scored = elastic_lm.evaluate(model, task, "test", per_sample=True)
    assert len(scored["samples"]) == len(task.dataset("test"))  # one per sentence (--sample-break-mode eos)
    assert sum(loss for loss, _ in scored["samples"]) / scored["tokens"] == pytest.approx(trained["loss"], rel=1e-9)


@pytest.mark.slow
def test_a_learned_block_is_swept_with_other_methods_as_if_loaded_with_them(data, tmp_path):
    """Swept with euler, an rk2_gated model drops its gate: its perplexity is the same checkpoint's
    loaded with node_method=euler (the loader drops the gate too). A model trained without a learned
    block cannot be swept with one, and is told which methods it can."""
    from node_seq.fairseq import elastic_lm
    from node_seq.ode import OptionError

    checkpoint = train_lm(data, tmp_path / "rk2_gated", ["--task", "node_language_modeling",
                                                         "--node-method", "rk2_gated"], updates=3)
    model, task = _load(data, checkpoint)
    task.load_dataset("test")
    rows = elastic_lm.sweep(model, task, "test", methods=["rk2_gated", "euler"], factors=[1.0])
    assert [(r["method"], r["nfe"]) for r in rows] == [("rk2_gated", 4.0), ("euler", 2.0)]
    as_euler, _ = _load(data, checkpoint, node_method="euler")
    assert all(layer.coefficients is None for layer in as_euler.decoder.layers)
    assert rows[1]["perplexity"] == pytest.approx(elastic_lm.evaluate(as_euler, task, "test")["perplexity"], rel=1e-9)
    assert rows[0]["perplexity"] != pytest.approx(rows[1]["perplexity"], rel=1e-6)  # the gate did something

    with pytest.raises(OptionError, match="--methods: 'pc' is a learned block and this model .*'rk2_gated'"):
        elastic_lm.sweep(model, task, "test", methods=["euler", "pc"], factors=[1.0])


def test_paired_bootstrap_of_perplexities():
    import random

    from node_seq.fairseq.elastic_lm import paired_bootstrap

    rng = random.Random(0)
    baseline = [(rng.uniform(5, 40), rng.randint(3, 15)) for _ in range(300)]
    assert paired_bootstrap(baseline, baseline) == 1.0  # no difference: every resample is as far
    noisy = [(loss + rng.gauss(0, 2), tokens) for loss, tokens in baseline]  # unbiased noise
    assert paired_bootstrap(baseline, noisy) > 0.05
    worse = [(loss + 0.5 * tokens + rng.gauss(0, 2), tokens) for loss, tokens in baseline]  # +0.5 nats a token
    assert paired_bootstrap(baseline, worse) == pytest.approx(1 / 1001)
    with pytest.raises(ValueError, match="not scored on the same samples"):
        paired_bootstrap(baseline, baseline[1:])


def test_elastic_depth_refuses_bad_options_naming_them(data, tmp_path, capsys):
    from node_seq.fairseq import elastic_lm

    for argv, message in ((["--methods", "rk5"], "--methods: unknown method 'rk5'"),
                          (["--factors", "0,2"], "--factors: factors must be numbers > 0")):
        with pytest.raises(SystemExit):
            elastic_lm.main(["--checkpoint", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o"), *argv])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
