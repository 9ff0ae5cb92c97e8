"""The fast tier's guard: a test not marked ``slow`` that trains or starts a process fails, saying so.

``pytest -m "not slow"`` is the developer loop; it stays fast only while every test that trains or
spawns carries the marker. Rather than trust each new test to remember, this plugin watches the
setup (session fixtures included) and the call of every unmarked test, in every run (CI's full run
too), for the two things that make a test slow here:

- a process: the interpreter's audit events for ``subprocess.Popen`` (torchrun, fairseq-train, bash),
  ``os.system``, ``os.exec*``, ``os.spawn*``, ``os.posix_spawn`` and ``os.fork``;
- a training run: fairseq-train in this process (``node_seq.fairseq.inprocess.train``), the HF
  ``Trainer.train`` (``NodeTrainer``, ``NodeSeq2SeqTrainer`` and the HF train command included) and
  the vision script's epoch (``vision.train.train_epoch``). These are wrapped as their modules are
  imported, so a run that never imports them pays nothing for them.

Not seen: ``multiprocessing``'s spawn start method (it raises no audit event), and a training loop a
test writes itself (a few optimiser steps on a tiny model is a unit test, not a training run).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import platform
import sys
from types import ModuleType

import pytest

PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                            "os.forkpty"})

# module -> the attribute path of its training entry point
TRAINING_ENTRY_POINTS = {
    "node_seq.fairseq.inprocess": "train",
    "transformers.trainer": "Trainer.train",
    "vision.train": "train_epoch",
}


class NotMarkedSlow(Exception):
    """Raised where a test outside the slow tier starts a process or a training run."""


class FastTierGuard(importlib.abc.MetaPathFinder):
    """The plugin (registered by ``tests/conftest.py``) and the import hook that wraps the entry points."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None  # the unmarked test being set up or run, if any
        self.violation: str | None = None
        # platform.processor() runs `uname -p` once per interpreter and caches it: run it here, so
        # that a benchmark describing its machine is not a test starting a process
        platform.processor()
        sys.addaudithook(self._audit)  # an audit hook cannot be removed: it checks ``self.item``
        sys.meta_path.insert(0, self)
        for name in TRAINING_ENTRY_POINTS.keys() & sys.modules.keys():
            self._wrap(sys.modules[name])

    # -- pytest hooks ------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item):
        return (yield from self._watching(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        return (yield from self._watching(item))

    def _watching(self, item: pytest.Item):
        self.item = None if item.get_closest_marker("slow") else item
        self.violation = None
        try:
            result = yield
        finally:
            self.item = None
        if self.violation is not None:  # the exception was caught on the way out: fail all the same
            pytest.fail(self.violation, pytrace=False)
        return result

    # -- what it watches ---------------------------------------------------------------------------

    def _refuse(self, what: str) -> None:
        if self.item is not None:
            self.violation = (f"{self.item.nodeid} {what} but is not marked slow: mark it @pytest.mark.slow "
                              f"(or its module pytestmark = pytest.mark.slow); the fast tier is pytest -m \"not slow\"")
            raise NotMarkedSlow(self.violation)

    def _audit(self, event: str, args: tuple) -> None:
        if self.item is not None and event in PROCESS_EVENTS:
            self._refuse(f"starts a process ({event} {args[1] if event == 'subprocess.Popen' else ''})".rstrip())

    def _wrap(self, module: ModuleType) -> None:
        *owner_path, name = TRAINING_ENTRY_POINTS[module.__name__].split(".")
        owner = functools.reduce(getattr, owner_path, module)
        entry = getattr(owner, name)

        @functools.wraps(entry)
        def guarded(*args, **kwargs):
            self._refuse(f"trains ({module.__name__}.{entry.__qualname__})")
            return entry(*args, **kwargs)

        setattr(owner, name, guarded)

    def find_spec(self, name: str, path, target=None):
        """Wraps an entry point's module once it has run; every other import goes by untouched."""
        if name not in TRAINING_ENTRY_POINTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            self._wrap(module)

        spec.loader.exec_module = exec_module
        return spec
