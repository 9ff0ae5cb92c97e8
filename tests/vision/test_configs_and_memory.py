"""Shipped configs stay valid; the memory probe sees backprop grow and the memory-free modes stay flat."""

import glob
import os

import pytest
import torch

from node_seq.memory import LiveTensorBytes
from node_seq.ode import SolverConfig
from vision.config import TrainConfig, load_config_file
from vision.memory import measure
from vision.models import create_model

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "vision", "*.yaml")))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_shipped_config_validates(path, tmp_path):
    config = TrainConfig.from_dict(load_config_file(path), source=path)
    config.update({"output_dir": str(tmp_path / "run")})
    assert config.validate() is config
    assert not (tmp_path / "run").exists()


def test_live_tensor_bytes_counts_and_frees():
    with LiveTensorBytes() as tracker:
        a = torch.ones(1024)  # 4 KiB
        b = a * 2
        view = b.view(32, 32)
        del b
        assert tracker.live == 8192  # the view keeps b's storage alive
        del view, a
    assert tracker.live == 0 and tracker.peak == 8192


def test_memory_grows_only_with_backprop():
    model = create_model("odenet4", num_classes=3, input_shape=(1, 6, 6), width=4, norm="ln")
    x = torch.randn(4, 1, 6, 6)
    peak = {}
    for gradient in ("backprop", "checkpoint", "adjoint", "reversible"):
        peak[gradient] = [measure(model, x, SolverConfig(method="euler", steps=n, gradient=gradient))["peak_bytes"]
                          for n in (2, 8)]
    state = 4 * 4 * 6 * 6 * 4  # one ODE state: batch x channels x 6 x 6 float32
    assert peak["backprop"][1] - peak["backprop"][0] > 6 * 3 * state  # several activations per extra step
    assert peak["checkpoint"][1] - peak["checkpoint"][0] <= 6 * state + 1024  # about one state per extra step
    for gradient in ("adjoint", "reversible"):
        # flat: less than one state more for 6 more steps (only the grid of step times grows)
        assert abs(peak[gradient][1] - peak[gradient][0]) < state, gradient
    assert peak["reversible"][1] < peak["backprop"][1] / 2
