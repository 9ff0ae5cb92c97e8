"""Checkpoints as plain dicts of tensors and Python values, written atomically.

No custom class is pickled, so every checkpoint loads with ``torch.load(weights_only=True)``
and survives refactoring of the code that wrote it; a model is rebuilt from the registry name
and keyword options stored next to its ``state_dict``.
"""

from __future__ import annotations

import os
import tempfile

import torch

FORMAT = "node-seq-vision/1"


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(state: dict, path: str) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    _atomic(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a node-seq vision checkpoint (format {FORMAT!r})")
    return state


def write_text_atomic(path: str, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))
