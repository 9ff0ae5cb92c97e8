"""node-seq: Neural-ODE Transformers for fairseq and HuggingFace, built on one ODE core.

``import node_seq`` loads the ODE core and torch, nothing of transformers or fairseq. The Auto
classes learn ``node_transformer`` when :mod:`node_seq.hf` is imported; so that ``import node_seq``
followed by ``AutoConfig``/``AutoModelForSeq2SeqLM`` keeps working, importing transformers (before
or after node_seq) imports :mod:`node_seq.hf` too.
"""

__version__ = "0.1.0"

import importlib as _importlib  # noqa: E402

from . import ode as ode  # noqa: E402
from ._after_import import after_import as _after_import  # noqa: E402

_after_import("transformers", lambda _: _importlib.import_module("node_seq.hf"))


def __getattr__(name: str):
    """``node_seq.hf`` after a bare ``import node_seq``, imported on first use."""
    if name == "hf":
        return _importlib.import_module("node_seq.hf")
    raise AttributeError(f"module 'node_seq' has no attribute {name!r}")
