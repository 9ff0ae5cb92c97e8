"""Linear layers that carry their own initialisation, so re-initialising a model reproduces it.

A leaf module's ``reset_parameters`` is the one place its init is written: the constructor runs
it, and so does a front end that materialises a model built on the meta device (HF's
``_init_weights`` reaches every module that owns parameters, not their parents). Only
``nn.init`` calls are used, which transformers guards so that loaded weights are left alone.
"""

from __future__ import annotations

from torch import nn


class XavierLinear(nn.Linear):
    """fairseq's init: Xavier-uniform weights scaled by ``gain``; a zero bias, or ``nn.Linear``'s own."""

    def __init__(self, in_features: int, out_features: int, *, gain: float = 1.0, zero_bias: bool = True,
                 bias: bool = True):
        self.gain, self.zero_bias = gain, zero_bias
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight, gain=self.gain)
        if self.bias is not None:
            if self.zero_bias:
                nn.init.zeros_(self.bias)
            else:
                bound = self.in_features ** -0.5
                nn.init.uniform_(self.bias, -bound, bound)


class UniformLinear(nn.Linear):
    """``nn.Linear``'s own init, weights and bias uniform in +-1/sqrt(in_features): what fairseq's
    Transformer layers give their feed-forward blocks (``fc1``/``fc2``), which are plain ``nn.Linear``.

    A class of its own so that a front end re-initialising a model can tell it from the Linear
    layers it initialises itself (HF's ``lm_head``).
    """


class ChannelDrop(nn.Linear):
    """``[I | 0]`` without bias: keeps the first ``out_features`` channels and drops the rest.

    An augmented NODE layer projects back to the model width with it: at initialisation the
    layer's output is the first channels of its wider state, no extra mixing (the state itself
    is not the plain layer's: LayerNorm statistics and attention heads see the zero channels).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:
        nn.init.eye_(self.weight)
