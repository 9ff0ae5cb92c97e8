"""Batch invariance of the HF models under per-sentence step control (issue #29, item 1).

A sentence alone and in a batch with longer and harder sentences gives the same encoder output,
logits and generated tokens (greedy and beam 4) to float rounding; under the batch-wide controller
it does not, which is what makes these tests able to fail.
"""

from __future__ import annotations

import pytest
import torch

from node_seq.hf import NodeTransformerConfig
from node_seq.ode import OptionError

from hf_helpers import tiny_lm, tiny_model

RELATIVE = 1e-5
# Row 2 is the sentence (6 tokens and </s>); row 0 is longer and needs more steps, row 1 is shorter.
SOURCES = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2], [20, 21, 22, 2, 1, 1, 1, 1, 1, 1, 1],
                        [30, 31, 32, 33, 34, 35, 2, 1, 1, 1, 1]])
# Row 1, left-padded, is the prompt; row 0 a longer one.
PROMPTS = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 11], [1, 1, 1, 1, 2, 9, 10, 12]])


def scaled_up(model):
    """Fields twice as large, so that a solve takes several steps and the rows need different numbers."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".field." in name and parameter.dim() == 2:
                parameter.mul_(2.0)
    return model


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def generated(model, ids, mask, beams: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens, and what they were chosen by (greedy: every step's logits; beam: the sequence scores)."""
    out = model.generate(input_ids=ids, attention_mask=mask, num_beams=beams, max_new_tokens=6, do_sample=False,
                         output_logits=True, output_scores=True, return_dict_in_generate=True)
    scores = torch.stack(out.logits, dim=1) if beams == 1 else out.sequences_scores
    return out.sequences, scores


def seq2seq(control: str):
    return scaled_up(tiny_model(node_method="dopri5", node_rtol=1e-2, node_step_control=control))


def lm(control: str):
    return scaled_up(tiny_lm(node_method="dopri5", node_rtol=1e-2, node_step_control=control))


def test_seq2seq_encoder_output_is_the_sentences_own():
    mask = SOURCES.ne(1).long()
    differences = {}
    for control in ("sequence", "batch"):
        encoder = seq2seq(control).get_encoder()
        with torch.no_grad():
            batched = encoder(input_ids=SOURCES, attention_mask=mask).last_hidden_state
            nfe = encoder.layers[0].last_stats.row_nfe
            alone = encoder(input_ids=SOURCES[2:3, :7], attention_mask=mask[2:3, :7]).last_hidden_state
        differences[control] = relative(batched[2, :7], alone[0])
        if control == "sequence":
            assert nfe[2] < nfe[0], f"the longer neighbour should need more steps: {nfe.tolist()}"
    assert differences["sequence"] <= RELATIVE
    assert differences["batch"] > 1e-3


def test_lm_logits_are_the_sequences_own():
    mask = PROMPTS.ne(1).long()
    differences = {}
    for control in ("sequence", "batch"):
        model = lm(control)
        with torch.no_grad():
            batched = model(input_ids=PROMPTS, attention_mask=mask).logits
            alone = model(input_ids=PROMPTS[1:, 4:], attention_mask=mask[1:, 4:]).logits
        differences[control] = relative(batched[1, 4:], alone[0])
    assert differences["sequence"] <= RELATIVE
    assert differences["batch"] > 1e-3


#: Per model kind: the model, the batch, the sentence's row, its real columns, and where its generated row
#: starts in the batch's output (an LM's output repeats its left-padded prompt).
KINDS = {"seq2seq": (seq2seq, SOURCES, 2, slice(0, 7), 0), "lm": (lm, PROMPTS, 1, slice(4, None), 4)}


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_generates_the_same_for_a_sentence_alone_and_in_a_batch(kind, beams):
    build, ids, row, columns, start = KINDS[kind]
    model, mask = build("sequence"), ids.ne(1).long()
    with torch.no_grad():
        tokens, scores = generated(model, ids, mask, beams)
        alone_tokens, alone_scores = generated(model, ids[row:row + 1, columns], mask[row:row + 1, columns], beams)
    assert tokens[row, start:].tolist() == alone_tokens[0].tolist()
    assert relative(scores[row], alone_scores[0]) <= RELATIVE


def test_the_config_field_defaults_per_method_and_refuses_by_its_name():
    assert NodeTransformerConfig(node_method="dopri5").solver_config().step_control == "sequence"
    assert NodeTransformerConfig(node_method="adaptive_heun").solver_config().step_control == "batch"
    assert NodeTransformerConfig(node_method="dopri5", node_gradient="adjoint").solver_config().step_control == "batch"
    assert NodeTransformerConfig(node_method="dopri5", node_step_control="batch").solver_config().step_control == "batch"
    with pytest.raises(OptionError, match=r"node_step_control: 'sequence' needs our own adaptive loop \(dopri5, "
                                          r"bosh3\); method 'adaptive_heun'"):
        NodeTransformerConfig(node_method="adaptive_heun", node_step_control="sequence")
    with pytest.raises(OptionError, match=r"node_step_control: unknown value 'rows'; choose one of batch, sequence"):
        NodeTransformerConfig(node_step_control="rows")


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("kind", KINDS)
def test_generation_nfe_per_sequence_is_the_sequences_own(kind, beams):
    """``generation_nfe.per_sequence``: the encoder's NFE for the row plus, per pass, the mean over the
    input's beams; alone and in a batch the same under per-sequence control (every sentence here runs
    to the length limit, so the batch takes no pass the sentence alone does not)."""
    build, ids, row, columns, _ = KINDS[kind]
    model, mask = build("sequence"), ids.ne(1).long()
    with torch.no_grad():
        tokens, _ = generated(model, ids, mask, beams)
        batched, loop = model.generation_nfe.per_sequence, model.generation_nfe.nfe_forward
        generated(model, ids[row:row + 1, columns], mask[row:row + 1, columns], beams)
        alone = model.generation_nfe.per_sequence
    assert tokens[:, -6:].ne(model.config.pad_token_id).all(), "every sequence should run to the length limit"
    assert batched.shape == (len(ids),) and batched[row] == alone[0]
    assert len(set(batched.tolist())) > 1, "the sequences should need different work"
    assert batched.max() <= loop  # the loop evaluates every row until the hardest is done


@pytest.mark.parametrize("solver", [dict(node_step_control="batch"), dict(node_method="rk4")],
                         ids=["batch-control", "fixed-grid"])
@pytest.mark.parametrize("kind", KINDS)
def test_generation_nfe_per_sequence_without_per_sequence_control_is_the_batchs(kind, solver):
    build = tiny_model if kind == "seq2seq" else tiny_lm
    model = scaled_up(build(**{"node_method": "dopri5", "node_rtol": 1e-2, **solver}))
    ids = KINDS[kind][1]
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=ids.ne(1).long(), num_beams=2, max_new_tokens=3,
                       do_sample=False)
    assert model.generation_nfe.per_sequence.tolist() == [model.generation_nfe.nfe_forward] * len(ids)


@pytest.mark.parametrize("control", ["sequence", "batch"])
def test_the_trainers_log_the_spread_across_rows_under_per_sequence_control(control, tmp_path):
    """``nfe_f`` stays the loop's count; ``nfe_row_*`` say how the rows' own counts spread, only where they exist."""
    from transformers import Seq2SeqTrainingArguments

    from node_seq.hf.training import NodeSeq2SeqTrainer
    from node_seq.nn.layers import node_layers

    model, mask = seq2seq(control), SOURCES.ne(1).long()
    trainer = NodeSeq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True))
    trainer.current_gradient_accumulation_steps = 1  # what train() sets before its first step (not run here)
    trainer.training_step(model, {"input_ids": SOURCES, "attention_mask": mask,
                                  "labels": SOURCES.masked_fill(mask == 0, -100)})
    per_row = sum(layer.last_stats.row_nfe for layer in node_layers(model)) if control == "sequence" else None
    trainer.log({"loss": 1.0})
    logged = trainer.state.log_history[-1]
    assert logged["nfe_f"] > 0
    if per_row is None:
        assert "nfe_row_mean" not in logged
        return
    per_row = per_row.double()
    assert [logged[key] for key in ("nfe_row_mean", "nfe_row_sd", "nfe_row_min", "nfe_row_max")] == [
        round(float(value), 1) for value in (per_row.mean(), per_row.std(unbiased=False), per_row.min(), per_row.max())]
    assert logged["nfe_row_min"] < logged["nfe_row_max"] <= logged["nfe_f"]
