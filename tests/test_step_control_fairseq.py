"""Batch invariance of the fairseq encoder-decoder under per-sentence step control (issue #29, item 1):
a sentence alone and in a batch with a longer, harder one gives the same encoder output and the same
greedy and beam-4 translations (tokens and scores), where the batch-wide controller does not."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_helpers import TINY, make_task  # noqa: E402

RELATIVE = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("numbers"))


def model_of(data, control: str):
    """An untrained tiny model, its fields made larger so that solves take several steps."""
    from fairseq import options, tasks

    import node_seq.fairseq  # noqa: F401

    torch.manual_seed(0)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(data), *TINY, "--node-method", "dopri5", "--node-rtol", "1e-2", "--node-step-control", control])
    task = tasks.setup_task(args)
    model = task.build_model(args).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".field." in name and parameter.dim() == 2:
                parameter.mul_(4.0)
            elif name.endswith("embed_tokens.weight"):
                parameter.normal_(0, 1)
    return model, task


def batch(task):
    """Row 1, the sentence, left-padded as fairseq pads sources; row 0 longer."""
    dictionary = task.source_dictionary
    words = [dictionary[i] for i in range(dictionary.nspecial, len(dictionary))]
    pad, eos = dictionary.pad(), dictionary.eos()
    long = [dictionary.index(w) for w in words[:9]] + [eos]
    short = [dictionary.index(w) for w in words[12:16]] + [eos]
    tokens = torch.tensor([long, [pad] * (len(long) - len(short)) + short])
    return tokens, torch.tensor([len(long), len(short)]), len(short)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_encoder_output_is_the_sentences_own(data):
    differences = {}
    for control in ("sequence", "batch"):
        model, task = model_of(data, control)
        tokens, lengths, short = batch(task)
        with torch.no_grad():
            batched = model.encoder(tokens, lengths)["encoder_out"][0]  # (time, batch, channels)
            nfe = model.encoder.layers[0].last_stats.row_nfe
            alone = model.encoder(tokens[1:, -short:], lengths[1:])["encoder_out"][0]
        differences[control] = relative(batched[-short:, 1], alone[:, 0])
        if control == "sequence":
            assert nfe[1] < nfe[0], f"the longer sentence should need more steps: {nfe.tolist()}"
    assert differences["sequence"] <= RELATIVE
    assert differences["batch"] > 1e-3


@pytest.mark.parametrize("beam", [1, 4])
def test_the_translation_is_the_sentences_own(data, beam):
    from fairseq.sequence_generator import SequenceGenerator

    model, task = model_of(data, "sequence")
    tokens, lengths, short = batch(task)
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=6)
    with torch.no_grad():
        batched = generator.generate([model], {"net_input": {"src_tokens": tokens, "src_lengths": lengths}})[1][0]
        alone = generator.generate([model], {"net_input": {"src_tokens": tokens[1:, -short:],
                                                           "src_lengths": lengths[1:]}})[0][0]
    assert batched["tokens"].tolist() == alone["tokens"].tolist()
    assert relative(batched["positional_scores"], alone["positional_scores"]) <= RELATIVE
