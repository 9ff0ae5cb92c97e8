"""Solver-swap evaluation: test step = train step / factor, and the files it writes."""

import csv
import json

import pytest
import torch

from node_seq.ode import SolverConfig, swap_solver, swap_solvers
from vision.data import load_dataset
from vision.evaluate import evaluate, plot_sweeps, solver_sweep, write_sweep
from vision.models import create_model


@pytest.mark.parametrize("train_steps,factor,expected", [(64, 0.5, 32), (64, 2, 128), (2, 4, 8), (2, 1, 2),
                                                         (1, 0.5, 1), (8, 0.75, 6)])
def test_test_step_is_train_step_over_factor(train_steps, factor, expected):
    solver = swap_solver(SolverConfig(method="euler", steps=train_steps, gradient="reversible"), "rk4", factor)
    assert solver.method == "rk4" and solver.steps == expected and solver.gradient == "backprop"
    # h_test = h_train / factor (not 1 / (h_train * factor), which the original code used)
    assert 1 / solver.steps == pytest.approx((1 / train_steps) / factor, rel=0.5 if expected == 1 else 1e-9)


def test_adaptive_test_solvers_scale_tolerances():
    solver = swap_solver(SolverConfig(method="euler", steps=4, rtol=1e-3, atol=1e-4), "dopri5", 10)
    assert solver.steps is None and solver.rtol == pytest.approx(1e-4) and solver.atol == pytest.approx(1e-5)
    fixed = swap_solver(SolverConfig(method="dopri5"), "euler", 8)
    assert fixed.steps == 8


def test_a_fixed_grid_test_solver_drops_the_adaptive_first_step():
    # fairseq's and HF's dopri5 layers try the whole interval first (first_step set); a grid has no first step
    train = SolverConfig(method="dopri5", rtol=1e-2, atol=1e-3, first_step=1.0).validate()
    assert swap_solver(train, "euler", 2).validate().steps == 2
    assert swap_solver(train, "dopri5", 2).validate().first_step == 1.0


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_swapped_solvers_drop_the_training_only_snapshot_budget(method):
    train = SolverConfig(method="euler", steps=8, gradient="checkpoint", checkpoint_snapshots=2).validate()
    assert swap_solver(train, method, 2).validate().checkpoint_snapshots is None


def test_a_sweep_measures_each_grid_once_under_the_factor_that_describes_it():
    # on a one-step model, factors 0.25, 0.5 and 1 all round to one step: one row, labelled factor 1
    pairs = [(m, f, s.steps) for m, f, s in swap_solvers(SolverConfig(method="euler", steps=1),
                                                         ["euler", "dopri5"], [0.25, 0.5, 1, 2])]
    assert pairs == [("euler", 1, 1), ("euler", 2, 2),
                     ("dopri5", 0.25, None), ("dopri5", 0.5, None), ("dopri5", 1, None), ("dopri5", 2, None)]
    # 4 steps x 0.25 is one step exactly, 4 x 0.3 rounds to it
    assert [(f, s.steps) for _, f, s in swap_solvers(SolverConfig(method="euler", steps=4), ["rk4"], [0.3, 0.25])] \
        == [(0.25, 1)]


@pytest.fixture(scope="module")
def spheres_model():
    torch.manual_seed(0)
    data = load_dataset("spheres2", n_train=40, n_test=37)
    model = create_model("simple_odenet", num_classes=2, input_shape=(2,), width=4)
    model.set_solver(SolverConfig(method="euler", steps=4))
    return model, data


def test_evaluate_counts_every_example(spheres_model):
    model, data = spheres_model
    result = evaluate(model, data, data.test, batch_size=5)  # last batch holds 2 examples
    with torch.no_grad():
        model.eval()
        predictions = model(data.prepare(data.test.x)).argmax(1)
        model.train()
    assert result["accuracy"] == pytest.approx(float((predictions == data.test.y).float().mean()))
    assert result["nfe_forward"] == 4


def test_sweep_rows_restore_the_model(spheres_model, tmp_path):
    model, data = spheres_model
    model.train()
    rows = solver_sweep(model, data, data.test, train_solver=model.solver, methods=["euler", "midpoint"],
                        factors=[0.5, 1, 4])
    assert [(r["method"], r["steps"]) for r in rows] == [("euler", 2), ("euler", 4), ("euler", 16),
                                                         ("midpoint", 2), ("midpoint", 4), ("midpoint", 16)]
    assert [r["nfe_forward"] for r in rows] == [2, 4, 16, 4, 8, 32]
    same = next(r for r in rows if r["method"] == "euler" and r["factor"] == 1)
    assert same["accuracy"] == evaluate(model, data, data.test)["accuracy"]
    assert model.solver == SolverConfig(method="euler", steps=4) and model.training
    paths = write_sweep(rows, str(tmp_path), title="tiny", train_steps=4)
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and table[2]["steps"] == "16"
    assert json.load(open(paths["json"]))["rows"][5]["steps"] == 16
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plot_sweeps({"a": (rows, 4), "b": (rows, None)}, str(tmp_path / "both.png"))
    assert (tmp_path / "both.png").stat().st_size > 1000


def test_sweeps_plot_one_colour_per_run_one_dash_per_method_and_shade_training_steps(monkeypatch, tmp_path):
    import node_seq.plotting

    drawn = {}
    monkeypatch.setattr(node_seq.plotting, "plot_lines", lambda series, path, **kw: drawn.update(series=series, **kw))
    rows = [{"method": m, "steps": s, "accuracy": a} for m, s, a in
            [("euler", 4, 0.5), ("euler", 2, 0.25), ("rk4", 2, 0.75), ("rk4", 0, None), ("rk4", 8, None)]]
    plot_sweeps({"a": (rows, 4), "b": (rows[:2], None)}, str(tmp_path / "x.png"), title="t")
    assert drawn["series"] == {"a: euler": [(2, 0.25), (4, 0.5)], "a: rk4": [(2, 0.75)], "b: euler": [(2, 0.25), (4, 0.5)]}
    assert [(s["color"], s["linestyle"]) for s in drawn["styles"].values()] == [("C0", "-"), ("C0", "--"), ("C1", "-")]
    assert drawn["shaded_x"] == [(4, "C0")] and drawn["ylim"] == (0, 1.02)
