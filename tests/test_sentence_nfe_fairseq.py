"""Per-sentence NFE in fairseq-generate (issue #29, item 2): a sentence's figure (encoder plus every
decoding step it took part in, mean over its beams) is its own under per-sentence control, whichever
batch it is decoded in; under batch-wide control it is the batch's work while the sentence decoded;
``--task node_translation`` prints it as ``N-<id>`` lines whose mean is the summary line's."""

from __future__ import annotations

import argparse
import statistics

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_helpers import batch, make_task, model_of, summary_lines  # noqa: E402
from node_seq.nn.layers import collect_stats, is_ode_layer  # noqa: E402
from node_seq.text.generate_log import read_nfe, read_sentence_nfe  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("numbers"))


def prepared(data, control: str, beam: int, extra: list[str] = ()):
    """The tiny adaptive model, prepared as fairseq-generate prepares it, and a generator. A sentence
    of fewer than 6 source tokens ends after three tokens (an untrained model's would all run to the
    length limit), so that sentences finish at different steps and fairseq drops them."""
    from fairseq.sequence_generator import SequenceGenerator

    model, task = model_of(data, control, extra)
    model.prepare_for_inference_(argparse.Namespace(generation=argparse.Namespace(beam=beam)))
    decoder_forward, eos = model.decoder.forward, task.target_dictionary.eos()

    def forward(prev_output_tokens, encoder_out, **kwargs):
        logits, extra = decoder_forward(prev_output_tokens, encoder_out=encoder_out, **kwargs)
        if prev_output_tokens.shape[1] > 3:  # the rows follow fairseq's reordering, source lengths too
            logits[encoder_out["src_lengths"][0].view(-1) < 6, -1, eos] = 1e4
        return logits, extra

    model.decoder.forward = forward  # fairseq's generator calls the decoder's forward itself
    return model, task, SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=6)


def decode(model, generator, tokens, lengths):
    """The hypotheses and each sentence's NFE."""
    with torch.no_grad():
        hypotheses = generator.generate([model], {"net_input": {"src_tokens": tokens, "src_lengths": lengths}})
    return hypotheses, model.decoder.generation_nfe.end_batch()


@pytest.mark.parametrize("beam", [1, 4])
def test_a_sentence_costs_the_same_alone_and_beside_a_harder_one(data, beam):
    model, task, generator = prepared(data, "sequence", beam)
    tokens, lengths, short = batch(task)
    tokens, lengths = tokens.flip(0), lengths.flip(0)  # the short sentence first: once it is dropped, the
    hypotheses, batched = decode(model, generator, tokens, lengths)  # long one's rows move up to row 0
    _, alone = decode(model, generator, tokens[:1, -short:], lengths[:1])
    assert len({len(h[0]["tokens"]) for h in hypotheses}) > 1, "the sentences should end at different steps"
    assert batched[0] == alone[0]
    assert batched[0] != batched[1], "the two sentences should need different work"


def test_under_batch_control_a_sentence_costs_every_step_it_decoded_in(data):
    """Greedy: a sentence takes part in as many decoding steps as its hypothesis has tokens (``</s>``
    included); each step costs every row the step's NFE, and the encoder every sentence its solve's."""
    model, task, generator = prepared(data, "batch", 1)
    tokens, lengths, _ = batch(task)
    layers = [layer for layer in model.decoder.layers if is_ode_layer(layer)]
    assert len(layers) == 1
    steps = []
    hook = layers[0].register_forward_hook(lambda layer, args, out: steps.append(layer.last_stats.nfe_forward))
    try:
        hypotheses, per_sentence = decode(model, generator, tokens, lengths)
    finally:
        hook.remove()
    decoded = [len(h[0]["tokens"]) for h in hypotheses]
    assert len(set(decoded)) > 1, "the sentences should end at different steps"
    encoder = collect_stats(model.encoder).nfe_forward
    assert per_sentence.tolist() == [encoder + sum(steps[:length]) for length in decoded]


@pytest.mark.parametrize("control", ["sequence", "batch"])
def test_the_task_prints_each_sentences_nfe_and_the_summary_their_mean(data, control, capsys):
    model, task, generator = prepared(data, control, 4, ["--task", "node_translation"])
    tokens, lengths, short = batch(task)
    with torch.no_grad():
        task.inference_step(generator, [model], {"id": torch.tensor([7, 3]),
                                                 "net_input": {"src_tokens": tokens, "src_lengths": lengths}})
        task.inference_step(generator, [model], {"id": torch.tensor([5]), "net_input": {
            "src_tokens": tokens[1:, -short:], "src_lengths": lengths[1:]}})
    sentences = read_sentence_nfe(capsys.readouterr().out)
    assert sorted(sentences) == [3, 5, 7]
    # the same sentence, beside the long one and alone
    assert (sentences[3] == sentences[5]) == (control == "sequence")
    assert read_nfe("\n".join(summary_lines("Translated 3 sentences"))) == round(statistics.fmean(sentences.values()), 1)


def test_the_language_model_counts_each_prompt_over_its_beams(tmp_path):
    """No encoder: the first decoding step opens the batch, one sentence per ``--beam`` rows (fairseq
    tells the decoder its beam only through ``prepare_for_inference_``'s configuration)."""
    from fairseq import options, tasks
    from fairseq.sequence_generator import SequenceGenerator
    from lm_helpers import TINY_LM, make_lm_data

    data = make_lm_data(tmp_path, train_size=100)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), "--task", "language_modeling", *TINY_LM, "--node-method", "rk4"])
    task = tasks.setup_task(args)
    model = task.build_model(args).eval()
    model.prepare_for_inference_(argparse.Namespace(generation=argparse.Namespace(beam=3)))
    calls = []
    hooks = [layer.register_forward_hook(lambda layer, args, out: calls.append(layer.last_stats.nfe_forward))
             for layer in model.decoder.layers]
    prefix = torch.tensor([[5, 6], [7, 8]])
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=4)
    try:
        with torch.no_grad():
            generator.generate([model], {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([2, 2])}},
                               prefix_tokens=prefix)
    finally:
        for hook in hooks:
            hook.remove()
    # rk4, fixed grid: every row of every step costs the same; both prompts decode every step
    assert model.decoder.generation_nfe.end_batch().tolist() == [sum(calls)] * 2


@pytest.mark.parametrize("control", ["sequence", "batch"])
def test_the_logs_add_the_spread_across_sentences_under_per_sentence_control(data, control):
    """``nfe_f`` stays the loop's count; ``nfe_row_*`` say how the sentences' own counts spread, only where
    they exist (through ``--task node_translation``'s logging outputs here, as training logs them)."""
    from fairseq.logging import metrics

    model, task = model_of(data, control, ["--task", "node_translation", "--criterion", "cross_entropy"])
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    sample = dataset.collater([dataset[i] for i in range(4)])
    _, _, logging_output = task.valid_step(sample, model, task.build_criterion(model.args))
    with metrics.aggregate() as logged:
        task.reduce_metrics([logging_output], task.build_criterion(model.args))
    values = logged.get_smoothed_values()
    if control == "batch":
        assert "nfe_row_mean" not in values and values["nfe_f"] > 0
        return
    per_sentence = sum(layer.last_stats.row_nfe for layer in model.ode_layers()).double()
    assert values["nfe_row_mean"] == round(float(per_sentence.mean()), 1)
    assert values["nfe_row_sd"] == round(float(per_sentence.std(unbiased=False)), 1) > 0
    assert (values["nfe_row_min"], values["nfe_row_max"]) == (per_sentence.min(), per_sentence.max())
    assert values["nfe_row_max"] <= values["nfe_f"]  # the loop evaluates every row until the hardest is done


def test_a_model_logging_its_own_counts_adds_the_spread_too(data):
    """Without ``--task node_translation`` the model logs its own worker's counts, the spread with them."""
    from fairseq.logging import metrics

    model, task = model_of(data, "sequence")
    tokens, lengths, _ = batch(task)
    with metrics.aggregate() as logged, torch.no_grad():
        model(tokens, lengths, tokens[:, :3])
    per_sentence = sum(layer.last_stats.row_nfe for layer in model.ode_layers()).double()
    assert logged.get_smoothed_values()["nfe_row_max"] == per_sentence.max() != per_sentence.min()


@pytest.mark.slow
def test_fairseq_generate_prints_n_lines_only_with_the_task_and_the_spread_either_way(data, tmp_path):
    """The commands themselves: in this process (what the tests and benchmarks run) and a real
    ``fairseq-generate`` process writing to ``--results-path``, whose file gets the ``N-`` lines beside
    the ``H-`` lines."""
    import subprocess

    from fairseq_helpers import REPO, fairseq_generate, fairseq_train

    fairseq_train(data, tmp_path / "ck", ["--max-update", "2", "--disable-validation", "--node-method", "dopri5",
                                          "--node-rtol", "1e-2", "--node-step-control", "sequence"])
    checkpoint = tmp_path / "ck" / "checkpoint_last.pt"
    with_task = fairseq_generate(data, checkpoint, ["--task", "node_translation"])
    sentences = read_sentence_nfe(with_task)
    hypotheses = [int(line.split("\t")[0][2:]) for line in with_task.splitlines() if line.startswith("H-")]
    assert sorted(sentences) == sorted(hypotheses) and len(hypotheses) == 12
    assert read_nfe(with_task) == round(statistics.fmean(sentences.values()), 1)
    plain = fairseq_generate(data, checkpoint)
    assert read_sentence_nfe(plain) == {} and read_nfe(plain) == read_nfe(with_task)
    assert "over 12 sentences: sd" in plain

    results = tmp_path / "results"
    run = subprocess.run([str(REPO / ".venv" / "bin" / "fairseq-generate"), str(data), "--user-dir", "user_dir",
                          "--path", str(checkpoint), "--gen-subset", "test", "--beam", "3", "--max-tokens", "2000",
                          "--num-workers", "0", "--required-batch-size-multiple", "1", "--task", "node_translation",
                          "--results-path", str(results)], cwd=REPO, check=True, capture_output=True, text=True,
                         timeout=300)
    written = (results / "generate-test.txt").read_text()
    assert sum(line.startswith("H-") for line in written.splitlines()) == 12
    assert read_sentence_nfe(written) == sentences
    # fairseq's log lines, the summary among them, go to stderr: its speech tasks configure logging on import
    assert read_nfe(run.stderr) == read_nfe(with_task)
