"""Small vector fields shared by the ODE-core tests."""

import torch
from torch import nn


class Decay(nn.Module):
    """dy/dt = -k y + cos(t): exact solution known, depends on t."""

    def __init__(self, k: float = 1.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y + torch.cos(t)

    @staticmethod
    def exact(y0: float, t: float, k: float = 1.0) -> float:
        import math
        # y = C e^{-kt} + (k cos t + sin t)/(k^2+1)
        particular0 = k / (k * k + 1)
        c = y0 - particular0
        return c * math.exp(-k * t) + (k * math.cos(t) + math.sin(t)) / (k * k + 1)


class CrossAttentionField(nn.Module):
    """Reads an extra ``memory`` only through attention, like a decoder's cross-attention."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.q = nn.Linear(dim, dim, dtype=torch.float64)
        self.v = nn.Linear(dim, dim, dtype=torch.float64)
        self.time = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, t, y, memory, mask, scale):
        scores = self.q(y) @ memory.transpose(-1, -2) * scale
        scores = scores.masked_fill(mask[:, None, :], float("-inf"))
        return torch.tanh(scores.softmax(-1) @ self.v(memory) + self.time * t * y)


class Stiffening(torch.nn.Module):
    """A row-wise, time-dependent field whose rows need more steps the larger their state."""

    def __init__(self, dim: int = 5):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(dim, dim, generator=generator, dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.weight) * (1 + t) * y.abs().mean(-1, keepdim=True)


def rows_of_growing_difficulty(dim: int = 5) -> torch.Tensor:
    y0 = torch.randn(4, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return y0 * torch.tensor([0.1, 1.0, 3.0, 6.0], dtype=torch.float64)[:, None]
