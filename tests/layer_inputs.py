"""Layer sizes and inputs shared by the layer tests."""

import torch

from node_seq.nn import LayerSpec
from node_seq.ode import SolverConfig

SPEC = LayerSpec(embed_dim=16, num_heads=4, ffn_dim=32, dropout=0.0)


def euler(steps=1, t1=1.0):
    return SolverConfig(method="euler", steps=steps, t1=t1)


def padded_batch(width: int = 16):
    """A (3, 7, width) batch and its padding mask: row 0 full, rows 1 and 2 padded from 5 and 2."""
    x = torch.randn(3, 7, width)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 2:] = True
    return x, padding


def assert_incremental_equals_full(layer, memory, memory_padding, *, length: int = 6, batch: int = 3) -> dict:
    """Decode ``length`` positions one at a time through the cache and compare with one full pass
    under a causal mask; return the cache. ``memory=None``: a layer without cross-attention."""
    y = torch.randn(memory.shape[0] if memory is not None else batch, length, layer.width - layer.augment_dims)
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
    with torch.no_grad():
        full = layer(y, memory, memory_padding, self_attn_mask=causal)
        cache: dict = {}
        steps = [layer(y[:, i:i + 1], memory, memory_padding, cache=cache) for i in range(length)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    return cache


def hard_neighbours(layer_width: int = 16):
    """A batch of three: row 1 is the sentence (5 real tokens), row 0 a longer neighbour whose small state
    makes the relative tolerance harder to meet, row 2 a short one."""
    torch.manual_seed(0)
    x, padding = padded_batch(layer_width)
    x = x.double()
    x[0] *= 0.2
    return x, padding


def scaled_up(layer: torch.nn.Module, factor: float = 4.0) -> torch.nn.Module:
    """Fields scaled up so that the solves need several steps (a fresh layer is near the identity)."""
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if parameter.dim() == 2:
                parameter.mul_(factor)
            elif name.endswith("time.weight"):
                parameter.normal_()
    return layer.double().eval()
