"""node-seq: Neural-ODE Transformers for fairseq and HuggingFace, built on one ODE core."""

__version__ = "0.1.0"

from . import ode as ode  # noqa: E402
