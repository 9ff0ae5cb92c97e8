"""The method registry: a method added in one place is seen everywhere; its facts match the solvers.

A toy fixed-grid method (Ralston's second-order method) and a toy adaptive pair (Heun-Euler as an
FSAL pair, run by our own loop) are registered for one test each, then must be accepted by
``SolverConfig``, solved by ``solve``, offered by the option schema and a front end's flags, held
to their gradient modes, and gone again afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

from node_seq.nn.layers import FailurePolicy
from node_seq.nn.options import FAIRSEQ, OPTIONS, NodeOptions, add_arguments
from node_seq.ode import (
    ADAPTIVE_METHODS, DEFAULT_FALLBACK, DEFAULT_SOLVER, FALLBACK_METHODS, FIXED_GRID_METHODS, METHODS, REGISTRY,
    MethodSpec, OptionError, SolverConfig, register, registered, solve,
)
from node_seq.ode.embedded import EmbeddedPair
from node_seq.ode.methods import ADAPTIVE, FIXED
from node_seq.ode.schemes import RungeKutta, Tableau
from ode_fields import Decay

RALSTON = MethodSpec("toy_ralston", FIXED, 2, 2, ("backprop", "checkpoint"), "Ralston's method",
                     scheme=RungeKutta(Tableau(c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(1 / 4, 3 / 4))), fallback=True)
# Heun's step, its error measured against Euler's; the last stage is f at the step's end (FSAL).
HEUN_EULER = MethodSpec("toy_heun_euler", ADAPTIVE, 2, 3, ("backprop",), "Heun-Euler 2(1)",
                        pair=EmbeddedPair(order=2, nodes=(1.0, 1.0), coupling=((1.0,), (0.5, 0.5)),
                                          error=(-0.5, 0.5, 0.0)))


def ralston(f, y: float, t0: float, t1: float, steps: int) -> float:
    """Ralston's method written out, in plain floats."""
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        k1 = f(t, y)
        k2 = f(t + 2 * h / 3, y + 2 * h / 3 * k1)
        y = y + h * (k1 / 4 + 3 * k2 / 4)
    return y


def fairseq_flags(*argv: str) -> NodeOptions:
    parser = argparse.ArgumentParser()
    add_arguments(parser, FAIRSEQ)
    return NodeOptions.from_front_end(parser.parse_args(argv), FAIRSEQ)


def test_a_registered_fixed_grid_method_is_seen_everywhere():
    with registered(RALSTON):
        assert "toy_ralston" in METHODS and "toy_ralston" in FIXED_GRID_METHODS and "toy_ralston" in FALLBACK_METHODS
        y0 = torch.tensor([0.7], dtype=torch.float64)
        y1, stats = solve(Decay(), y0, method="toy_ralston", steps=5, t1=2.0)
        expected = ralston(lambda t, y: -y + math.cos(t), 0.7, 0.0, 2.0, 5)
        assert y1.item() == pytest.approx(expected, rel=1e-14) and stats.nfe_forward == 5 * 2
        # the option schema and a front end's flags offer it, in its choices and its help
        assert "toy_ralston" in OPTIONS["method"].choices and "toy_ralston" in OPTIONS["method"].help
        options = fairseq_flags("--node-method", "toy_ralston", "--node-steps", "3",
                                "--node-fallback-method", "toy_ralston")
        assert options.solver(FAIRSEQ) == SolverConfig(method="toy_ralston", steps=3).validate()
        assert options.failure().fallback.method == "toy_ralston"
        # its gradient modes, and no others
        checkpointed, _ = solve(Decay(), y0, method="toy_ralston", steps=5, t1=2.0, gradient="checkpoint")
        assert torch.equal(checkpointed, y1)
        with pytest.raises(OptionError, match=r"^--node-gradient: method 'toy_ralston' does not allow 'adjoint'; "
                                              r"use 'backprop' or 'checkpoint'$"):
            fairseq_flags("--node-method", "toy_ralston", "--node-gradient", "adjoint")
        with pytest.raises(OptionError, match=r"^method: gradient 'reversible' runs only euler, heun, reversible_heun "
                                              r"backwards, got 'toy_ralston'$"):
            SolverConfig(method="toy_ralston", gradient="reversible").validate()
    assert "toy_ralston" not in METHODS and "toy_ralston" not in OPTIONS["method"].help
    with pytest.raises(OptionError, match=r"^method: unknown method 'toy_ralston'; choose one of euler, "):
        SolverConfig(method="toy_ralston").validate()
    with pytest.raises(SystemExit):  # argparse's own refusal of a value outside the choices
        fairseq_flags("--node-method", "toy_ralston")


def test_a_registered_adaptive_pair_runs_in_our_own_loop():
    y0 = torch.tensor([0.7, -0.2], dtype=torch.float64)
    with registered(HEUN_EULER):
        assert "toy_heun_euler" in ADAPTIVE_METHODS and "toy_heun_euler" not in FALLBACK_METHODS
        assert "adaptive (" in OPTIONS["method"].help and "toy_heun_euler)" in OPTIONS["method"].help
        y1, stats = solve(Decay(), y0, method="toy_heun_euler", rtol=1e-4, atol=1e-6, t1=2.0, first_step=0.1)
        exact = torch.tensor([Decay.exact(0.7, 2.0), Decay.exact(-0.2, 2.0)], dtype=torch.float64)
        assert (y1 - exact).abs().max() <= 20 * (1e-6 + 1e-4 * exact.abs().max())  # a few times the tolerance
        # two new evaluations per attempted step (the first stage is the last one's), f(t0, y0) once
        assert stats.nfe_forward == 1 + 2 * (stats.num_accepted + stats.num_rejected) and stats.num_accepted > 10
        with pytest.raises(OptionError, match=r"^gradient: method 'toy_heun_euler' does not allow 'adjoint'"):
            SolverConfig(method="toy_heun_euler", gradient="adjoint").validate()
        with pytest.raises(OptionError, match=r"^gradient: 'checkpoint' needs a fixed-grid method \(euler, midpoint"):
            SolverConfig(method="toy_heun_euler", gradient="checkpoint").validate()
    assert "toy_heun_euler" not in ADAPTIVE_METHODS


def test_a_scoped_registration_can_run_a_method_another_way():
    """``registered`` replaces an entry for the block: dopri5 without its pair is torchdiffeq's."""
    y0 = torch.tensor([0.7], dtype=torch.float64)
    ours, ours_stats = solve(Decay(), y0, method="dopri5", t1=2.0)
    with registered(dataclasses.replace(REGISTRY["dopri5"], pair=None)):
        theirs, theirs_stats = solve(Decay(), y0, method="dopri5", t1=2.0)
    again, _ = solve(Decay(), y0, method="dopri5", t1=2.0)
    assert torch.equal(again, ours) and not torch.equal(theirs, ours)
    assert theirs.item() == pytest.approx(ours.item(), abs=1e-3)
    assert REGISTRY["dopri5"].pair is not None


@pytest.mark.parametrize("changes,problem", [
    (dict(stages=3), "stages is 3, but its step evaluates the field 2 times"),
    (dict(gradients=("backprop", "adjoint")), "gradient 'adjoint' integrates with torchdiffeq"),
    (dict(gradients=("backprop", "magic")), "gradients must be some of backprop, checkpoint, adjoint, reversible"),
    (dict(kind=ADAPTIVE), "a fixed grid or learned block needs a scheme"),
    (dict(kind="implicit"), "kind must be one of fixed, learned, adaptive, got 'implicit'"),
    (dict(gradients=("reversible",), scheme=REGISTRY["rk2_gated"].scheme), "'reversible' needs a scheme that can step back"),
])
def test_a_method_that_contradicts_itself_is_refused_at_the_door(changes, problem):
    with pytest.raises(ValueError, match=f"^method 'toy_ralston': .*{problem}"):
        dataclasses.replace(RALSTON, **changes)


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="method 'rk4' is registered already"):
        register(dataclasses.replace(REGISTRY["rk4"]))
    assert REGISTRY["rk4"].scheme is not None


@pytest.mark.parametrize("name", [name for name, method in REGISTRY.items() if method.torchdiffeq])
def test_order_and_stages_are_torchdiffeqs(name):
    """Where torchdiffeq runs a method too (the adjoint, adaptive methods), it is the same method."""
    method, solver = REGISTRY[name], TORCHDIFFEQ_SOLVERS[REGISTRY[name].torchdiffeq]
    assert method.order == solver.order
    if method.kind == ADAPTIVE:
        assert method.stages == len(solver.tableau.c_sol)


@pytest.mark.parametrize("name", [name for name, method in REGISTRY.items() if method.pair])
def test_our_pairs_are_torchdiffeqs_tableaux(name):
    pair, tableau = REGISTRY[name].pair, TORCHDIFFEQ_SOLVERS[REGISTRY[name].torchdiffeq].tableau
    torch.testing.assert_close(torch.tensor(pair.nodes, dtype=torch.float64), tableau.alpha)
    for row, beta in zip(pair.coupling, tableau.beta):
        torch.testing.assert_close(torch.tensor(row, dtype=torch.float64), beta)
    torch.testing.assert_close(torch.tensor(pair.error, dtype=torch.float64), tableau.c_error)


def test_every_front_end_default_is_the_one_default_solver():
    """The schema's solver options default to DEFAULT_SOLVER's fields (its first step aside: the schema's
    ``initial_step`` tries the whole interval; and a sequence model's steps are controlled per sentence, where
    the core's generic state has no rows), and the fallback's to DEFAULT_FALLBACK."""
    solver = NodeOptions.from_front_end({}, FAIRSEQ).solver(FAIRSEQ)
    assert solver == dataclasses.replace(DEFAULT_SOLVER, first_step=DEFAULT_SOLVER.t1 - DEFAULT_SOLVER.t0,
                                         step_control="sequence")
    assert NodeOptions().failure().fallback == DEFAULT_FALLBACK == FailurePolicy().fallback
