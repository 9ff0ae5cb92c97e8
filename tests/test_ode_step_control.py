"""Per-row step control (issue #29, item 1): each row of the batch its own adaptive steps.

The promise is batch invariance: a row solved in a batch gives what it gives alone, whatever its
neighbours need. Every test below holds a batched solve to solves of each row alone, and shows that
the batch-wide controller (kept as ``step_control="batch"``) does not have that property.
"""

from __future__ import annotations

import pytest
import torch

from node_seq.nn import LayerSpec, NodeDecoderLayer, NodeEncoderLayer
from node_seq.ode import MaxStepsExceeded, OptionError, SolverConfig, StepSizeUnderflow, solve, swap_solver
from node_seq.ode.methods import REGISTRY

from layer_inputs import hard_neighbours, scaled_up
from ode_fields import Stiffening, rows_of_growing_difficulty

OWN_LOOP = [name for name, method in REGISTRY.items() if method.pair is not None]


def config(method: str, control: str = "sequence", **fields) -> SolverConfig:
    return SolverConfig(**{"method": method, "rtol": 1e-3, "atol": 1e-4, "step_control": control, **fields})


@pytest.mark.parametrize("first_step", [1.0, None], ids=["interval", "estimate"])
@pytest.mark.parametrize("method", OWN_LOOP)
def test_each_row_in_a_batch_is_solved_as_it_is_alone(method, first_step):
    field, y0 = Stiffening(), rows_of_growing_difficulty()
    solver = config(method, first_step=first_step)
    with torch.no_grad():
        batched, stats = solve(field, y0, solver)
        for row in range(len(y0)):
            alone, alone_stats = solve(field, y0[row:row + 1], solver)
            torch.testing.assert_close(batched[row:row + 1], alone, rtol=1e-12, atol=0)
            assert stats.row_nfe[row] == alone_stats.nfe_forward == alone_stats.row_nfe[0]
            assert stats.row_accepted[row] == alone_stats.num_accepted
    assert len(set(stats.row_nfe.tolist())) > 1, "the rows should need different work"
    assert stats.nfe_forward == int(stats.row_nfe.max())  # the loop runs until the last row is done


@pytest.mark.parametrize("method", OWN_LOOP)
def test_the_batch_wide_controller_lets_a_hard_row_change_an_easy_one(method):
    field, y0 = Stiffening(), rows_of_growing_difficulty()
    with torch.no_grad():
        batched, stats = solve(field, y0, config(method, "batch", first_step=1.0))
        alone, _ = solve(field, y0[:1], config(method, "batch", first_step=1.0))
    assert stats.row_nfe is None
    assert not torch.allclose(batched[:1], alone, rtol=1e-9, atol=0)


def test_per_row_counts_add_up_with_a_solve_that_has_none():
    """A layer without per-row counts (a fixed grid, batch-wide control, a fallback) evaluated every
    row at every step: summed with per-row counts, its total goes to every row."""
    from node_seq.ode import SolveStats

    rows = SolveStats(nfe_forward=9, num_accepted=2, row_nfe=torch.tensor([7, 9]), row_accepted=torch.tensor([1, 2]),
                      row_rejected=torch.tensor([0, 0]))
    grid = SolveStats(nfe_forward=4, num_accepted=1)
    for total in (rows + grid, grid + rows):
        assert total.row_nfe.tolist() == [11, 13] and total.row_accepted.tolist() == [2, 3]
        assert total.row_rejected.tolist() == [0, 0]
    assert (grid + grid).row_nfe is None
    assert (rows + SolveStats(row_nfe=torch.tensor([1, 2, 3]))).row_nfe is None  # rows of another batch
    assert grid.nfe_per_row(2).tolist() == [4, 4] and rows.nfe_per_row(2).tolist() == [7, 9]


@pytest.mark.parametrize("method", OWN_LOOP)
def test_per_row_solutions_meet_their_tolerance(method):
    field, y0 = Stiffening(), rows_of_growing_difficulty()
    with torch.no_grad():
        y1, _ = solve(field, y0, config(method))
        reference, _ = solve(field, y0, SolverConfig(method="dopri5", rtol=1e-11, atol=1e-12))
    error = (y1 - reference).norm(dim=1) / reference.norm(dim=1)  # the global error, per row
    assert error.max() < 1e-2, error


@pytest.mark.parametrize("method", OWN_LOOP)
def test_gradcheck_through_per_row_solves(method):
    """Gradients for the state, the field's weights and the end of the interval, against finite
    differences, in a batch whose two rows take different steps. The step sizes are constants to
    autograd (chosen without a graph) but move with the inputs under finite differences; at a tight
    tolerance that moves the solution by far less than gradcheck's tolerance."""
    y0 = rows_of_growing_difficulty(dim=3)[:2].clone().requires_grad_()
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    t1 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def run(y, weight, t1):
        field = lambda t, x: torch.tanh(x @ weight) * (1 + t) * x.pow(2).mean(-1, keepdim=True)  # noqa: E731
        return solve(field, y, method=method, rtol=1e-6, atol=1e-8, first_step=1.0, step_control="sequence",
                      t1=t1)

    nfe = run(y0, weight, t1)[1].row_nfe
    assert nfe[0] < nfe[1]
    assert torch.autograd.gradcheck(lambda *inputs: run(*inputs)[0], (y0, weight, t1))


def test_refused_where_the_solve_is_not_our_loop():
    with pytest.raises(OptionError, match=r"step_control: 'sequence' needs our own adaptive loop \(dopri5, bosh3\); "
                                          r"method 'adaptive_heun' runs through torchdiffeq"):
        SolverConfig(method="adaptive_heun", step_control="sequence").validate()
    with pytest.raises(OptionError, match=r"step_control: 'sequence' is not supported with gradient 'adjoint'"):
        SolverConfig(method="dopri5", gradient="adjoint", step_control="sequence").validate()
    with pytest.raises(OptionError, match=r"step_control: unknown value 'row'; choose one of batch, sequence"):
        SolverConfig(step_control="row").validate()
    SolverConfig(method="rk4", steps=2, step_control="sequence").validate()  # a fixed grid: the same in every row


def test_torchdiffeqs_loop_refuses_per_row_control_and_runs_batch_wide():
    """A benchmark's ``adaptive_loop("torchdiffeq")`` is a batch-wide controller: a per-row solve is
    refused by name, a batch-wide one runs."""
    from node_seq.ode import adaptive_loop

    field, y0 = Stiffening(), rows_of_growing_difficulty()
    with torch.no_grad(), adaptive_loop("torchdiffeq"):
        with pytest.raises(OptionError, match=r"step_control='batch' \(--node-step-control batch\)"):
            solve(field, y0, config("dopri5"))
        solve(field, y0, config("dopri5", "batch"))


def test_one_row_that_cannot_finish_stops_the_solve():
    field, y0 = Stiffening(), rows_of_growing_difficulty()
    with pytest.raises(MaxStepsExceeded, match="max_num_steps=3"):
        solve(field, y0, config("dopri5", max_num_steps=3, first_step=1.0))
    y0[2, 0] = float("nan")
    with pytest.raises(StepSizeUnderflow):
        solve(field, y0, config("dopri5", first_step=1.0))


def test_the_norm_must_give_one_value_per_row():
    with pytest.raises(ValueError, match=r"one value per row, shape \(4,\), got \(\)"):
        solve(Stiffening(), rows_of_growing_difficulty(), config("dopri5"), norm=lambda e: e.pow(2).mean().sqrt())


@pytest.mark.parametrize("method", OWN_LOOP)
def test_an_encoder_layers_sentence_is_its_own_alone_and_in_a_batch(method):
    spec = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.0)
    outputs = {}
    for control in ("sequence", "batch"):
        layer = scaled_up(NodeEncoderLayer(spec, config(method, control, rtol=1e-2, first_step=1.0),
                                           time_dependent=True))
        torch.manual_seed(0)
        x, padding = hard_neighbours()
        with torch.no_grad():
            batched = layer(x, padding)
            stats = layer.last_stats
            real = ~padding[1]
            alone = layer(x[1:2, real], None)
        outputs[control] = (batched[1, real], alone[0], stats)
    batched, alone, stats = outputs["sequence"]
    torch.testing.assert_close(batched, alone, rtol=1e-9, atol=1e-9)
    assert stats.row_nfe[1] < stats.row_nfe[0]
    batched, alone, _ = outputs["batch"]
    assert not torch.allclose(batched, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", OWN_LOOP)
def test_a_decoder_layers_sentence_is_its_own_alone_and_in_a_batch(method):
    spec = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.0)
    layer = scaled_up(NodeDecoderLayer(spec, config(method, rtol=1e-2, first_step=1.0), time_dependent=True))
    x, padding = hard_neighbours()
    memory = torch.randn(3, 4, 16, dtype=torch.float64)
    memory_padding = torch.zeros(3, 4, dtype=torch.bool)
    memory_padding[1, 3:] = True
    causal = torch.ones(7, 7, dtype=torch.bool).triu_(1)
    real = ~padding[1]
    with torch.no_grad():
        batched = layer(x, memory, memory_padding, self_attn_mask=causal, self_attn_padding_mask=padding)
        nfe = layer.last_stats.row_nfe
        alone = layer(x[1:2, real], memory[1:2, :3], None, self_attn_mask=causal[:5, :5])
    torch.testing.assert_close(batched[1, real], alone[0], rtol=1e-9, atol=1e-9)
    assert nfe[1] < nfe.max()


def test_recomputed_per_row_solves_give_the_same_gradients():
    """Activation checkpointing of a per-row solve (the layer's ``gradient_checkpointing``) takes the
    same steps again: the gradients are those of the stored solve."""
    spec = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.0)
    layer = scaled_up(NodeEncoderLayer(spec, config("dopri5", rtol=1e-2, first_step=1.0), time_dependent=True))
    layer.train()
    x, padding = hard_neighbours()
    grads = []
    for recompute in (False, True):
        layer.gradient_checkpointing = recompute
        layer.zero_grad()
        inputs = x.clone().requires_grad_()
        layer(inputs, padding).pow(2).sum().backward()
        grads.append([inputs.grad, *(p.grad for p in layer.parameters())])
    for stored, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, stored, rtol=1e-10, atol=1e-12)


def test_an_elastic_swap_keeps_per_row_control_where_the_new_method_allows_it():
    train = config("dopri5")
    assert swap_solver(train, "bosh3", 2.0).step_control == "sequence"
    assert swap_solver(train, "adaptive_heun", 2.0).validate().step_control == "batch"
    assert swap_solver(train, "rk4", 2.0).validate().steps == 2
