"""Step adaptation: which way the step moves, and when it does not."""

import pytest

from node_seq.ode import SolverConfig
from vision.adapt import StepAdapter, coarser, finer, reference_solver


def test_reference_is_more_accurate():
    assert reference_solver(SolverConfig(method="euler", steps=2)).method == "midpoint"
    assert reference_solver(SolverConfig(method="euler", steps=2)).steps == 10  # sqrt(50 * 2)
    assert reference_solver(SolverConfig(method="euler", steps=64)).steps == 64  # already fine: same step
    assert reference_solver(SolverConfig(method="midpoint", steps=2)).method == "rk4"
    snapshots = SolverConfig(method="euler", steps=8, gradient="checkpoint", checkpoint_snapshots=2)
    assert reference_solver(snapshots).validate().checkpoint_snapshots is None  # evaluates, never trains
    ref = reference_solver(SolverConfig(method="dopri5", rtol=1e-3, atol=1e-4))
    assert (ref.method, ref.rtol, ref.atol) == ("dopri5", pytest.approx(1e-4), pytest.approx(1e-5))


def test_finer_and_coarser_keep_whole_steps():
    s = SolverConfig(method="euler", steps=20)
    assert finer(s, 500).steps == 40
    assert finer(SolverConfig(method="euler", steps=400), 500).steps == 450  # halfway to the cap
    assert finer(SolverConfig(method="euler", steps=500), 500) is None
    assert coarser(s, 1.1).steps == 18
    assert coarser(SolverConfig(method="euler", steps=3), 1.1).steps == 2  # always at least one step fewer
    assert coarser(SolverConfig(method="euler", steps=1), 1.1) is None


def fake_accuracy(table):
    """accuracy depends on the solver through ``table(solver)``; records the solvers asked for."""
    asked = []

    def accuracy(solver):
        asked.append(solver)
        return table(solver), (solver.steps or 10)
    return accuracy, asked


def test_disagreement_shrinks_the_step():
    acc, asked = fake_accuracy(lambda s: 0.95 if s.method == "midpoint" else 0.5)
    solver, record = StepAdapter(threshold=0.1).update(SolverConfig(method="euler", steps=4), acc)
    assert solver.steps == 8 and solver.method == "euler"
    assert record["action"] == "finer" and record["old"] == "euler steps=4" and record["new"] == "euler steps=8"
    assert record["acc_train_solver"] == 0.5 and record["acc_reference"] == 0.95


def test_agreement_tries_a_larger_step_and_keeps_it_if_still_agreeing():
    acc, asked = fake_accuracy(lambda s: 0.9)
    solver, record = StepAdapter(threshold=0.1).update(SolverConfig(method="euler", steps=20), acc)
    assert solver.steps == 18 and record["action"] == "coarser"
    assert [s.steps for s in asked] == [20, reference_solver(SolverConfig(method="euler", steps=20)).steps, 18]


def test_agreement_but_larger_step_fails_keeps_the_step():
    acc, _ = fake_accuracy(lambda s: 0.9 if s.method == "midpoint" or s.steps >= 20 else 0.3)
    solver, record = StepAdapter(threshold=0.1).update(SolverConfig(method="euler", steps=20), acc)
    assert solver.steps == 20 and record is None


def test_at_the_step_cap_nothing_changes_but_it_is_logged():
    acc, _ = fake_accuracy(lambda s: 1.0 if s.method == "midpoint" else 0.0)
    solver, record = StepAdapter(max_steps=8).update(SolverConfig(method="euler", steps=8), acc)
    assert solver.steps == 8 and record["action"] == "at_limit"


def test_adaptive_solver_tolerance_and_reference_nfe():
    calls = []

    def accuracy(solver):
        calls.append(solver.rtol)
        nfe = 30 if solver.rtol >= 1e-4 else 100  # the first reference does not work harder
        return (0.9 if solver.rtol < 2e-5 else 0.5), nfe

    solver, record = StepAdapter().update(SolverConfig(method="dopri5", rtol=1e-3, atol=1e-3), accuracy)
    assert calls[:3] == [pytest.approx(1e-3), pytest.approx(1e-4), pytest.approx(1e-5)]
    assert record["action"] == "finer" and solver.rtol == pytest.approx(5e-4) and solver.atol == pytest.approx(5e-4)
