"""Layer sizes and inputs shared by the layer tests."""

import torch

from node_seq.nn import LayerSpec
from node_seq.ode import SolverConfig

SPEC = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.0)


def euler(steps=1, t1=1.0):
    return SolverConfig(method="euler", steps=steps, t1=t1)


def padded_batch():
    x = torch.randn(3, 7, 16)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 2:] = True
    return x, padding
