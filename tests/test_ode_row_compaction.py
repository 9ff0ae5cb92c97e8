"""Row compaction (issue #29, item 3): a per-row solve evaluates the field only on the rows still
stepping once others are done.

Compaction must change the work and nothing else: every test holds a compacted solve to the same
solve over the whole batch (``compact_rows=False``), in outputs, per-row stats and gradients, for a
toy field and for the real encoder and decoder layers (padding, dropout while training, activation
checkpointing, the regularisers' noise), and checks that the work done follows the rows' own NFE.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from node_seq.nn import LayerSpec, NodeDecoderLayer, NodeEncoderLayer
from node_seq.ode import SolverConfig, evaluated_rows, solve
from node_seq.ode.methods import REGISTRY

from layer_inputs import hard_neighbours, scaled_up
from ode_fields import Stiffening, rows_of_growing_difficulty

OWN_LOOP = [name for name, method in REGISTRY.items() if method.pair is not None]
RELATIVE = 1e-6


def per_row(method: str = "dopri5", **fields) -> SolverConfig:
    return SolverConfig(**{"method": method, "rtol": 1e-3, "atol": 1e-4, "step_control": "sequence", **fields})


def both_ways(solver: SolverConfig) -> dict[bool, SolverConfig]:
    return {compact: dataclasses.replace(solver, compact_rows=compact) for compact in (True, False)}


def assert_same(compacted: torch.Tensor, whole: torch.Tensor, scale: float | None = None) -> None:
    """Equal to ``RELATIVE`` of ``whole``'s largest entry (or of ``scale``: a gradient that is zero
    in exact arithmetic, such as a key bias's, is compared at the scale of the others)."""
    scale = float(whole.abs().max()) if scale is None else scale
    torch.testing.assert_close(compacted, whole, rtol=RELATIVE, atol=RELATIVE * scale)


@pytest.mark.parametrize("first_step", [1.0, None], ids=["interval", "estimate"])
@pytest.mark.parametrize("method", OWN_LOOP)
def test_compaction_changes_the_work_and_nothing_else(method, first_step):
    """Outputs, per-row stats and gradients equal those of the whole-batch solve; the rows
    evaluated are each row's own evaluations summed, fewer than the batch times the slowest's."""
    y0 = rows_of_growing_difficulty()
    results = {}
    for compact, solver in both_ways(per_row(method, first_step=first_step)).items():
        field, y = Stiffening(), y0.clone().requires_grad_()
        y1, stats = solve(field, y, solver)
        y1.pow(2).sum().backward()
        results[compact] = (y1.detach(), stats, y.grad, field.weight.grad)
    (y1, stats, *grads), (whole_y1, whole_stats, *whole_grads) = results[True], results[False]
    assert_same(y1, whole_y1)
    for compacted, whole in zip(grads, whole_grads):
        assert_same(compacted, whole)
    for name in ("row_accepted", "row_rejected", "row_nfe"):
        assert torch.equal(getattr(stats, name), getattr(whole_stats, name)), name
    assert stats.nfe_forward == whole_stats.nfe_forward == int(stats.row_nfe.max())
    assert whole_stats.row_evaluations == len(y0) * whole_stats.nfe_forward
    assert stats.row_evaluations == int(stats.row_nfe.sum()) < whole_stats.row_evaluations


@pytest.mark.parametrize("method", OWN_LOOP)
def test_gradcheck_through_compacted_solves(method):
    """Gradients for the state, the field's weights, a per-row input and the end of the interval
    against finite differences, in a batch whose rows finish at different steps."""
    y0 = rows_of_growing_difficulty(dim=3)[:2].clone().requires_grad_()
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    shift = (0.1 * torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)).requires_grad_()
    t1 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def field(t, x, shift):
        return torch.tanh(x @ weight + shift) * (1 + t) * x.pow(2).mean(-1, keepdim=True)

    def run(y, weight, shift, t1):
        return solve(field, y, method=method, rtol=1e-6, atol=1e-8, first_step=1.0, step_control="sequence",
                     inputs=(shift,), t1=t1)

    stats = run(y0, weight, shift, t1)[1]
    assert stats.row_evaluations < len(y0) * stats.nfe_forward, "the rows should finish at different steps"
    assert torch.autograd.gradcheck(lambda *inputs: run(*inputs)[0], (y0, weight, shift, t1))


class ReadsInputs(torch.nn.Module):
    """A field reading a per-row input, a shared one (first size 1), a number and ``None``, and
    recording which rows each evaluation saw."""

    def __init__(self):
        super().__init__()
        self.inner = Stiffening()
        self.seen: list[tuple[int, ...] | None] = []

    def forward(self, t, y, row_shift, shared, scale, nothing, *rest):
        rows = evaluated_rows()
        self.seen.append(None if rows is None else tuple(rows.tolist()))
        return self.inner(t, y) * scale + 0.1 * row_shift * shared


def test_per_row_inputs_are_gathered_and_shared_ones_kept():
    y0 = rows_of_growing_difficulty()
    inputs = (torch.linspace(-1, 1, 4, dtype=torch.float64)[:, None], torch.full((1, 5), 0.5, dtype=torch.float64),
              1.5, None)
    outputs = {}
    for compact, solver in both_ways(per_row(first_step=1.0)).items():
        field = ReadsInputs()
        with torch.no_grad():
            outputs[compact] = solve(field, y0, solver, inputs=inputs)[0]
        if compact:
            compacted = [rows for rows in field.seen if rows is not None]
            assert compacted and all(0 < len(rows) < len(y0) for rows in compacted)
            assert compacted[-1] == (3,), "the hardest row should be the last one stepping"
        else:
            assert set(field.seen) == {None}
    assert_same(outputs[True], outputs[False])


def test_a_solve_with_an_input_that_cannot_be_gathered_evaluates_every_row():
    """A dict (a decoding cache) has no rows to take: that solve is not compacted."""
    field, y0 = ReadsInputs(), rows_of_growing_difficulty()
    shift, shared = torch.zeros(4, 1, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64)
    with torch.no_grad():
        _, stats = solve(field, y0, per_row(first_step=1.0), inputs=(shift, shared, 1.0, None, {}))
    assert set(field.seen) == {None}
    assert stats.row_evaluations == len(y0) * stats.nfe_forward


def test_batch_control_ignores_the_switch():
    """Under batch control every row steps until the last is done: nothing to compact."""
    field, y0 = Stiffening(), rows_of_growing_difficulty()
    with torch.no_grad():
        _, stats = solve(field, y0, per_row(step_control="batch", compact_rows=True))
    assert stats.row_evaluations == len(y0) * stats.nfe_forward
    assert not per_row(step_control="batch").compacts and per_row().compacts


def test_the_switch_is_validated_by_its_name():
    from node_seq.ode import OptionError

    with pytest.raises(OptionError, match=r"compact_rows: must be True or False, got 'yes'"):
        per_row(compact_rows="yes").validate()


LAYER_SPEC = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.2, attention_dropout=0.1,
                       activation_dropout=0.1)


# Fields scaled up less than the batch-invariance tests': dropout while training makes them stiffer, and a
# stiffer solve would amplify the rounding of a smaller batch's matrix products past the comparison.
def encoder(solver: SolverConfig) -> NodeEncoderLayer:
    torch.manual_seed(0)
    return scaled_up(NodeEncoderLayer(LAYER_SPEC, solver, time_dependent=True), factor=2.0)


def decoder(solver: SolverConfig) -> NodeDecoderLayer:
    torch.manual_seed(0)
    return scaled_up(NodeDecoderLayer(LAYER_SPEC, solver, time_dependent=True), factor=2.0)


def run_layer(layer, *, recompute: bool = False, regularizers: tuple[str, ...] = ()):
    """A training step of ``layer`` on a padded batch whose rows need different steps (dropout on,
    one seed): the output, the stats and every gradient."""
    layer.train()
    layer.gradient_checkpointing, layer.regularizers = recompute, regularizers
    x, padding = hard_neighbours()
    x = x.clone().requires_grad_()
    torch.manual_seed(1)
    if isinstance(layer, NodeDecoderLayer):
        memory = torch.randn(3, 4, 16, dtype=torch.float64, requires_grad=True)
        memory_padding = torch.zeros(3, 4, dtype=torch.bool)
        memory_padding[1, 3:] = True
        causal = torch.ones(7, 7, dtype=torch.bool).triu_(1)
        y = layer(x, memory, memory_padding, self_attn_mask=causal, self_attn_padding_mask=padding)
        leaves = (x, memory)
    else:
        y = layer(x, padding)
        leaves = (x,)
    loss = y.masked_fill(padding[..., None], 0).pow(2).sum()
    for value in layer.last_regularizers.values():
        loss = loss + value
    loss.backward()
    return y.detach(), layer.last_stats, [leaf.grad for leaf in leaves] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("setting", ["plain", "recompute", "regularizers"])
@pytest.mark.parametrize("build", [encoder, decoder], ids=["encoder", "decoder"])
def test_a_layer_in_training_gives_the_same_with_and_without_compaction(build, setting):
    """Frozen dropout (the residual, activation and attention masks) and the Jacobian regulariser's
    noise are drawn once per solve on the whole batch; a compacted step reads its rows of them. With
    activation checkpointing the recompute compacts as the first run did."""
    options = {"recompute": dict(recompute=True), "regularizers": dict(regularizers=("kinetic", "jacobian"))}
    results = {compact: run_layer(build(solver), **options.get(setting, {}))
               for compact, solver in both_ways(per_row(rtol=1e-2, first_step=1.0)).items()}
    (y, stats, grads), (whole_y, whole_stats, whole_grads) = results[True], results[False]
    assert stats.row_evaluations < whole_stats.row_evaluations, "the rows should finish at different steps"
    assert torch.equal(stats.row_nfe, whole_stats.row_nfe)
    assert_same(y, whole_y)
    scale = max(float(whole.abs().max()) for whole in whole_grads if whole is not None)
    for compacted, whole in zip(grads, whole_grads):
        if whole is not None:
            assert_same(compacted, whole, scale)


def test_the_switch_reaches_the_layers_of_a_fairseq_model_and_a_saved_hf_model(tmp_path):
    """``--no-node-compact-rows`` and ``node_compact_rows=False`` (kept through save and load) arrive
    in every ODE layer's solver; the default compacts. (The option schema's own test gives every
    option's values to every front end.)"""
    pytest.importorskip("fairseq")
    from fairseq import options, tasks

    import node_seq.fairseq  # noqa: F401  (registers the model)
    from fairseq_helpers import TINY, make_task
    from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration
    from node_seq.nn.layers import node_layers

    data = make_task(tmp_path / "numbers")
    for flags, compact in (([], True), (["--no-node-compact-rows"], False)):
        args = options.parse_args_and_arch(options.get_training_parser(), [str(data), *TINY, *flags])
        model = tasks.setup_task(args).build_model(args)
        assert {layer.solver.compacts for layer in node_layers(model)} == {compact}

    config = NodeTransformerConfig(vocab_size=40, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_dim=32,
                                   decoder_ffn_dim=32, encoder_layers=1, decoder_layers=1, node_compact_rows=False)
    NodeTransformerForConditionalGeneration(config).save_pretrained(tmp_path / "hf")
    loaded = NodeTransformerForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert loaded.config.node_compact_rows is False
    assert {layer.solver.compact_rows for layer in node_layers(loaded)} == {False}
