"""The one "evaluate under other solvers" routine (:mod:`node_seq.elastic`), on stand-in layers."""

import csv
import dataclasses
import io

import pytest

from node_seq.elastic import csv_text, evaluate_settings, markdown, series, solver_swapped, sweep
from node_seq.ode import MaxStepsExceeded, SolverConfig


@dataclasses.dataclass
class Layer:
    solver: SolverConfig


def test_every_layer_runs_each_swapped_solver_and_gets_its_own_back():
    own = [SolverConfig(method="rk4", steps=2), SolverConfig(method="rk4", steps=2, gradient="checkpoint")]
    layers = [Layer(solver) for solver in own]

    def score(solver):
        assert all(layer.solver is layers[0].solver for layer in layers)  # one solver for all
        return {"seen": (layers[0].solver.method, layers[0].solver.steps, layers[0].solver.rtol)}

    def scored(solver):
        with solver_swapped(layers, solver):
            return score(solver)

    rows = sweep(own[0], ["euler", "dopri5"], [1, 4], scored)
    assert rows == [{"method": "euler", "factor": 1, "steps": 2, "seen": ("euler", 2, own[0].rtol)},
                    {"method": "euler", "factor": 4, "steps": 8, "seen": ("euler", 8, own[0].rtol)},
                    {"method": "dopri5", "factor": 1, "steps": None, "seen": ("dopri5", None, own[0].rtol)},
                    {"method": "dopri5", "factor": 4, "steps": None, "seen": ("dopri5", None, own[0].rtol / 4)}]
    assert [layer.solver for layer in layers] == own
    with pytest.raises(RuntimeError), solver_swapped(layers, SolverConfig(method="euler", steps=1)):
        raise RuntimeError
    assert [layer.solver for layer in layers] == own  # restored after an error too


def test_a_failed_solve_is_a_row_with_its_error_only_when_asked():
    failure = MaxStepsExceeded(method="dopri5", rtol=1e-3, atol=1e-4, t_reached=0.5, t1=1.0, nfe=7)

    def score(steps):
        if steps > 2:
            raise failure
        return {"accuracy": 0.5, "nfe": steps}

    settings = [({"steps": steps}, steps) for steps in (1, 3)]
    reported = []
    rows = evaluate_settings(settings, score, failed=("accuracy", "nfe"), report=reported.append)
    assert rows == reported == [{"steps": 1, "accuracy": 0.5, "nfe": 1, "error": None},
                                {"steps": 3, "accuracy": None, "nfe": None, "error": str(failure)}]
    with pytest.raises(MaxStepsExceeded, match="max_num_steps exceeded"):
        evaluate_settings(settings, score)


def test_the_tables_and_the_plot_lines():
    rows = [{"m": "euler", "nfe": 4, "acc": 0.5, "label": "euler:2"}, {"m": "rk4", "nfe": 8, "acc": None, "label": "x"},
            {"m": "euler", "nfe": None, "acc": 0.7, "label": "y"}, {"m": "rk4", "nfe": 16, "acc": 0.9, "label": "rk4:4"}]
    assert markdown(rows[:2], [("method", lambda r: r["m"]), ("NFE", lambda r: f"{r['nfe']:.1f}")]).splitlines() == [
        "| method | NFE |", "|---|---|", "| euler | 4.0 |", "| rk4 | 8.0 |"]
    read = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [(r["m"], r["nfe"], r["acc"]) for r in read] == [("euler", "4", "0.5"), ("rk4", "8", ""), ("euler", "", "0.7"),
                                                             ("rk4", "16", "0.9")]
    assert series(rows, by="m", x="nfe", y="acc") == {"euler": [(4, 0.5)], "rk4": [(16, 0.9)]}
    assert series(rows, by="m", x="nfe", y="acc", label="label")["rk4"] == [(16, 0.9, "rk4:4")]
