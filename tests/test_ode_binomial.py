"""Checkpointing with a budget of stored states: its schedule, its memory, and exact replays."""

import math

import pytest
import torch
from torch import nn

from node_seq.memory import LiveTensorBytes
from node_seq.ode import solve
from node_seq.ode.binomial import first_descent, split_point


class MLPField(nn.Module):
    def __init__(self, dim: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Tanh(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))

    def forward(self, t, y):
        return self.net(y)


def _run(steps, snapshots=None, *, gradient="checkpoint", method="euler", field=None, y0=None):
    field = field if field is not None else MLPField()
    y0 = y0 if y0 is not None else torch.randn(16, 32, requires_grad=True)
    y1, stats = solve(field, y0, method=method, steps=steps, gradient=gradient, checkpoint_snapshots=snapshots)
    y1.square().sum().backward()
    return y1, stats


def test_the_split_keeps_each_part_within_what_its_budget_can_reverse():
    for snapshots in range(1, 6):
        for n in range(2, 200):
            left = split_point(n, snapshots)
            repetitions = next(t for t in range(1, n + 1) if math.comb(snapshots + t, snapshots) >= n)
            assert 1 <= left < n
            assert left <= math.comb(snapshots + repetitions - 1, snapshots)  # s snapshots, one repetition fewer
            assert n - left <= math.comb(snapshots - 1 + repetitions, snapshots - 1)  # one snapshot fewer
    assert first_descent(64, 0) == [] and first_descent(5, 10) == [1, 2, 3, 4]


@pytest.mark.parametrize("method,stages", [("euler", 1), ("rk4", 4)])
def test_evaluation_counts_follow_the_schedule(method, stages):
    steps = 24
    per_step = _run(steps, None, method=method)[1].nfe_backward
    assert per_step == stages * steps  # each step recomputed once
    assert _run(steps, steps, method=method)[1].nfe_backward == per_step  # enough room: the same schedule
    assert _run(steps, 0, method=method)[1].nfe_backward == stages * steps * (steps + 1) // 2  # replay from y0
    counts = [_run(steps, s, method=method)[1].nfe_backward for s in (1, 2, 3, 5)]
    assert counts == sorted(counts, reverse=True) and counts[-1] > per_step
    # revolve's bound: with C(s + t, s) >= n every step is evaluated at most t + 1 times (once forward).
    assert counts[2] <= stages * steps * 3  # s = 3: C(3 + 3, 3) = 20 < 24 <= C(3 + 4, 3), t = 4


def test_memory_does_not_grow_with_the_steps():
    torch.manual_seed(0)
    field, y0 = MLPField(64), torch.randn(64, 64, requires_grad=True)
    state = y0.numel() * y0.element_size()

    def peak(steps, snapshots):
        with LiveTensorBytes() as tracker:
            _run(steps, snapshots, field=field, y0=y0)
        return tracker.peak

    assert peak(64, 3) - peak(2, 3) <= 3 * state  # at most the snapshots the short solve did not need
    assert peak(64, None) - peak(2, None) >= 60 * state  # per-step checkpointing keeps one state per step


def test_dropout_is_replayed_exactly_and_the_random_stream_is_left_as_backprop_leaves_it():
    def grads(gradient, snapshots):
        torch.manual_seed(3)
        field, y0 = MLPField(dropout=0.5).double(), torch.randn(16, 32, dtype=torch.float64, requires_grad=True)
        _run(9, snapshots, gradient=gradient, field=field, y0=y0, method="midpoint")
        return [y0.grad, *[p.grad for p in field.parameters()]], torch.rand(3)

    want, after_want = grads("backprop", None)
    got, after_got = grads("checkpoint", 2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert torch.equal(after_got, after_want)


def test_autocast_is_replayed_as_the_forward_ran():
    class Recording(MLPField):
        dtypes: list = []

        def forward(self, t, y):
            out = self.net(y)
            self.dtypes.append(out.dtype)
            return out

    field, y0 = Recording(), torch.randn(16, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, stats = solve(field, y0, method="heun", steps=6, gradient="checkpoint", checkpoint_snapshots=1)
    y1.float().square().sum().backward()
    assert stats.nfe_backward > stats.nfe_forward  # the replays ran, outside the autocast region
    assert set(field.dtypes) == {torch.bfloat16}


def test_a_second_backward_is_refused_with_a_reason():
    y0 = torch.randn(4, 32, requires_grad=True)
    y1, _ = solve(MLPField(), y0, method="euler", steps=4, gradient="checkpoint", checkpoint_snapshots=1)
    y1.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through it only once"):
        y1.sum().backward()
