"""The fast tier's guard (tests/tiers.py): a test outside the slow tier that starts a process or a
training run is stopped at that point, with its name and what to do; a slow one goes ahead."""

from __future__ import annotations

import contextlib
import importlib
import subprocess

import pytest
from tiers import NotMarkedSlow


@contextlib.contextmanager
def refused(request: pytest.FixtureRequest, match: str | None = None):
    """The guard's refusal, caught; caught on purpose, so cleared (else the guard fails the test after
    its call all the same)."""
    with pytest.raises(NotMarkedSlow, match=match) as caught:
        yield caught
    request.config.pluginmanager.get_plugin("fast-tier-guard").violation = None


def test_an_unmarked_test_that_starts_a_process_is_refused_by_name(request):
    with refused(request) as refusal:
        subprocess.run(["true"], check=True)
    assert str(refusal.value) == (
        f"{request.node.nodeid} starts a process (subprocess.Popen ['true']) but is not marked slow: mark it "
        "@pytest.mark.slow (or its module pytestmark = pytest.mark.slow); the fast tier is pytest -m \"not slow\"")


@pytest.mark.parametrize("module, train", [
    ("node_seq.fairseq.inprocess", lambda module: module.train(["--no-such-option"])),  # else argparse exits
    ("transformers.trainer", lambda module: module.Trainer.train(None)),  # else an AttributeError
    ("vision.train", lambda module: module.train_epoch(None, None, None, None)),
])
def test_an_unmarked_test_that_trains_is_refused_before_the_training_starts(request, module, train):
    with refused(request, match=rf"trains \({module}\.[\w.]+\) but is not marked slow"):
        train(importlib.import_module(module))


@pytest.mark.slow
def test_a_slow_test_may_start_a_process():
    assert subprocess.run(["true"]).returncode == 0
