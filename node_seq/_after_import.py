"""Run a callback right after a module is first imported, without importing it.

``import node_seq`` must not pay for transformers (seconds), yet whoever imports node_seq and then
uses transformers' Auto classes expects them to know ``node_transformer``. transformers has no
plugin entry points for model types, so node_seq watches for the import instead: a finder at the
front of ``sys.meta_path`` hands out the module's usual spec with a loader that runs the module,
then the callback. Finding the module (``importlib.util.find_spec``, as availability checks do) does
not use the watch up; only running it does.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Callable


def after_import(name: str, callback: Callable[[ModuleType], object]) -> None:
    """Call ``callback(module)`` once ``name`` is imported: now if it already is, else just after it is."""
    if name in sys.modules:
        _call(callback, sys.modules[name])
    else:
        sys.meta_path.insert(0, _Watch(name, callback))


def _call(callback: Callable[[ModuleType], object], module: ModuleType) -> None:
    # A failing callback must not make the watched import fail: the user imported that module, not ours.
    try:
        callback(module)
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"after importing {module.__name__}: {callback!r} failed: {error!r}", stacklevel=2)


class _Watch(importlib.abc.MetaPathFinder):
    def __init__(self, name: str, callback: Callable[[ModuleType], object]):
        self.name, self.callback, self.finding = name, callback, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.finding:
            return None
        self.finding = True  # the other finders find the real spec; this one steps aside meanwhile
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _RunThenCall(spec.loader, self)
        return spec


class _RunThenCall(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, watch: _Watch):
        self.loader, self.watch = loader, watch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # the module sees its own loader
        self.loader.exec_module(module)
        if self.watch in sys.meta_path:
            sys.meta_path.remove(self.watch)
        _call(self.watch.callback, sys.modules.get(module.__name__, module))
