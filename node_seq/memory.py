"""Peak memory of the tensors a piece of code creates (the plot of it: :mod:`node_seq.plotting`).

On a GPU, ``torch.cuda.max_memory_allocated`` answers. On the CPU, where PyTorch reports no
allocator statistics, :class:`LiveTensorBytes` watches every tensor an operation creates and counts
its storage's bytes until the last tensor that uses it is freed: the peak of that count is the peak
memory of tensors created under it (tensors that existed before, such as parameters, are not
counted). Shared by the tests of the ODE core, ``vision.memory`` and ``benchmarks.memory``; it
imports torch only.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of live storages created by operations run under it, and their peak."""

    def __init__(self):
        super().__init__()
        self.refs: dict[int, int] = {}  # storage pointer -> live tensors using it
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.live -= self.sizes.pop(ptr)
            del self.refs[ptr]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        ptr, size = storage.data_ptr(), storage.nbytes()
        if ptr == 0 or size == 0:
            return
        if ptr not in self.refs:
            self.refs[ptr], self.sizes[ptr] = 0, size
            self.live += size
            self.peak = max(self.peak, self.live)
        self.refs[ptr] += 1
        weakref.finalize(tensor, self._release, ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self._track(t)
        return out
