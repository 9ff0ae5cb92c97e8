"""fairseq-fixed 0.12.3.1 on NumPy 2: ``np.compat.long``, which NumPy 2 removed, in two data modules.

``TokenBlockDataset`` reads it for ``--sample-break-mode eos`` (the sentence-per-sample mode of
``--task language_modeling``) and ``LanguagePairDataset.num_tokens_vec`` for its sizes. Those two
modules (and no one else: NumPy itself is left alone) get a view of NumPy that also has
``compat.long``, the ``int64`` it stood for.
"""

from __future__ import annotations

import types

import numpy

_MODULES = ("fairseq.data.token_block_dataset", "fairseq.data.language_pair_dataset")


class _NumpyWithCompat(types.ModuleType):
    """NumPy, plus ``compat.long``."""

    compat = types.SimpleNamespace(long=numpy.int64)

    def __getattr__(self, name):
        return getattr(numpy, name)


def patch_fairseq_numpy() -> None:
    """Give the fairseq data modules that need it their view of NumPy (idempotent)."""
    if hasattr(numpy, "compat"):
        return  # NumPy 1: nothing to do
    import importlib

    for name in _MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.np, _NumpyWithCompat):
            module.np = _NumpyWithCompat("numpy")
