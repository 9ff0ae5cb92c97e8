"""Batch invariance of the fairseq encoder-decoder under per-sentence step control (issue #29, item 1):
a sentence alone and in a batch with a longer, harder one gives the same encoder output and the same
greedy and beam-4 translations (tokens and scores), where the batch-wide controller does not."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_helpers import batch, make_task, model_of, relative  # noqa: E402

RELATIVE = 1e-5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_task(tmp_path_factory.mktemp("numbers"))


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
