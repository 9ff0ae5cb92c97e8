"""What ``torch.compile`` must be told to trace a checkpointed solve as one graph.

A fixed-grid step has Python side effects that belong to the forward pass only: it counts its
evaluations into the solve's :class:`~node_seq.ode.SolveStats`, tells the field which stage it is
at, and a :class:`~node_seq.nn.dropout.FrozenDropout` draws its mask at the first evaluation.
Eager checkpointing replays them when it recomputes a step in the backward pass; a compiled
backward cannot run Python, so dynamo refuses side effects inside ``checkpoint`` unless it is told
that they need not be replayed. For these they need not: the recomputation reuses the forward's
dropout masks (replayed random state), and the backward evaluations are counted when the solve is
traced (see :func:`node_seq.ode.solve`).
"""

from __future__ import annotations

import contextlib

import torch

#: The dynamo settings a compiled NODE model needs (read when a graph is traced, not when it runs).
DYNAMO_SETTINGS = {"skip_fwd_side_effects_in_bwd_under_checkpoint": True}


def compile_settings() -> contextlib.AbstractContextManager:
    """Wrap every call of a compiled NODE model (its first calls trace it, and so may a later one
    that recompiles); without it, ``gradient="checkpoint"`` fails to compile. Scoped rather than
    set globally, so other code compiled in the same process keeps dynamo's default."""
    return torch._dynamo.config.patch(**DYNAMO_SETTINGS)
