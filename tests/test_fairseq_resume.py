"""A fairseq run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("fairseq")
import node_seq.fairseq  # noqa: E402,F401  (lets torch.load(weights_only=True) read fairseq checkpoints)

from fairseq_helpers import REPO, TINY, make_task  # noqa: E402

pytestmark = pytest.mark.slow  # fairseq-train in processes of its own, one of them killed

UPDATES, EVERY = 40, 8


def command(data, save):
    return [str(REPO / ".venv" / "bin" / "fairseq-train"), str(data), "--user-dir", "user_dir", *TINY,
            "--node-method", "rk4", "--dropout", "0.1", "--optimizer", "adam", "--lr", "1e-3",
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "256",
            "--max-update", str(UPDATES), "--save-interval-updates", str(EVERY), "--no-epoch-checkpoints",
            "--disable-validation", "--seed", "3", "--num-workers", "0", "--save-dir", str(save)]


def final_state(save):
    return torch.load(save / "checkpoint_last.pt", weights_only=True)


def _whole(checkpoint: Path) -> bool:
    return checkpoint.exists() and zipfile.is_zipfile(checkpoint)


def test_killed_run_resumes_exactly(tmp_path):
    data = make_task(tmp_path, train_size=300)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(data, tmp_path / "reference"), cwd=REPO, env=env, check=True, capture_output=True,
                   timeout=600)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(data, killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # fairseq copies checkpoint_last.pt into place (not atomically): kill once the copy is whole, when
    # the zip's central directory, written last, is there
    while not _whole(killed / "checkpoint_last.pt") and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = torch.load(killed / "checkpoint_last.pt", weights_only=True)["optimizer_history"][-1]["num_updates"]
    assert interrupted_at < UPDATES, "the run finished before it could be killed"

    subprocess.run(command(data, killed), cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    reference, resumed = final_state(tmp_path / "reference"), final_state(killed)
    assert resumed["optimizer_history"][-1]["num_updates"] == UPDATES
    assert reference["model"].keys() == resumed["model"].keys()
    for name in reference["model"]:
        assert torch.equal(reference["model"][name], resumed["model"][name]), name
    for key in ("exp_avg", "exp_avg_sq"):
        for a, b in zip(reference["last_optimizer_state"]["state"].values(),
                        resumed["last_optimizer_state"]["state"].values()):
            assert torch.equal(a[key], b[key])
