"""node-seq: Neural-ODE Transformers for fairseq and HuggingFace, built on one ODE core."""

__version__ = "0.1.0"

from importlib.util import find_spec as _find_spec  # noqa: E402

from . import ode as ode  # noqa: E402

try:
    _has_transformers = _find_spec("transformers") is not None
except (ImportError, ValueError):
    _has_transformers = False
if _has_transformers:  # register node_transformer with the HF Auto classes (skipped without transformers)
    from .hf import register as _register_hf

    _register_hf()
