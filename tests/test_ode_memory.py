"""What each gradient mode stores for the backward pass, counted in bytes of saved tensors."""

import pytest
import torch
from torch import nn

from node_seq.ode import solve


class MLPField(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 128), nn.Tanh(), nn.Linear(128, 16))

    def forward(self, t, y, memory):
        return self.net(y) + memory


def saved_bytes(gradient: str, method: str, steps: int) -> int:
    """Bytes of distinct storages autograd keeps after the forward solve."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(0)
    y0 = torch.randn(32, 16, requires_grad=True)
    memory = torch.randn(32, 16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        solve(MLPField(), y0, inputs=(memory,), method=method, steps=steps, gradient=gradient)
    return sum(storages.values())


STATE_BYTES = 32 * 16 * 4


@pytest.mark.parametrize("gradient,method", [("adjoint", "rk4"), ("reversible", "euler"),
                                             ("reversible", "heun"), ("reversible", "reversible_heun")])
def test_memory_free_modes_store_the_same_for_any_number_of_steps(gradient, method):
    assert saved_bytes(gradient, method, 2) == saved_bytes(gradient, method, 64)


def test_checkpoint_stores_one_state_per_step_and_no_activations():
    growth = saved_bytes("checkpoint", "rk4", 34) - saved_bytes("checkpoint", "rk4", 2)
    # 32 more steps keep 32 more states (plus a few bytes of bookkeeping), no inner activations.
    assert 32 * STATE_BYTES <= growth < 1.05 * 32 * STATE_BYTES


def test_backprop_stores_every_stage_activation():
    growth = saved_bytes("backprop", "rk4", 34) - saved_bytes("backprop", "rk4", 2)
    # Each rk4 step keeps 4 evaluations' worth of 128-wide hidden activations.
    assert growth > 32 * 4 * (32 * 128 * 4)
