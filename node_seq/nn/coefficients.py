"""The learned coefficients of the learned ODE blocks (``rk2_gated``, ``pc``), owned by the layer.

The ODE core holds no parameters: a layer whose method is a learned block builds one of these
and passes it to every solve (``solve(..., coefficients=...)``), where the block's scheme reads it
(:mod:`node_seq.ode.schemes` says what each scheme reads).

One set per layer. The ODE Transformer shares one gate among all the layers of its encoder (and
PCformer one ``alpha`` unless ``--layer-wise``); node-seq builds each layer on its own (fairseq's
and HF's layer lists, through one factory), so coefficients shared across layers would have to be
threaded through both front ends and their checkpoints. Per layer they cost ``2d + 1`` weights
(``rk2_gated``) or ``6d + 2`` (``pc``) for a layer of width ``d``, and each layer may learn its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ode import SolverConfig
from .linear import XavierLinear


class StageGate(nn.Module):
    """``rk2_gated``'s gate ``g = sigmoid(W [k1; k2] + b)``: one weight per token, ``Linear(2d, 1)``
    initialised as fairseq's (Xavier weights, zero bias), as in the ODE Transformer."""

    def __init__(self, width: int):
        super().__init__()
        self.gate_linear = XavierLinear(2 * width, 1)

    def gate(self, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        """(..., width) twice -> (..., 1). The weight's halves read ``k1`` and ``k2`` apart, which
        is ``W [k1; k2]`` without building the concatenation.

        A wrapped ``gate_linear`` (a LoRA adapter: peft's ``target_modules="all-linear"`` reaches
        it) is called on the concatenation instead: reading its base weight would bypass the wrapper.
        """
        linear = self.gate_linear
        if type(linear) is not XavierLinear:
            return torch.sigmoid(linear(torch.cat([k1, k2], dim=-1)))
        weight, width = linear.weight, k1.shape[-1]
        logits = F.linear(k1, weight[:, :width], linear.bias) + F.linear(k2, weight[:, width:])
        return torch.sigmoid(logits)


class EMACoefficients(nn.Module):
    """``pc``'s coefficients: the predictor's EMA ``alpha`` and the corrector's ``beta`` (both
    start at 0.5, PCformer's start for ``alpha``), and a LayerNorm on each of the three stages
    (PCformer's ``--rk-norm``)."""

    num_stages = 3

    def __init__(self, width: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(1))
        self.beta = nn.Parameter(torch.empty(1))
        self.stage_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(self.num_stages))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, 0.5)
        nn.init.constant_(self.beta, 0.5)

    def normalize(self, stage: int, k: torch.Tensor) -> torch.Tensor:
        return self.stage_norms[stage](k)


#: The coefficients of each learned block, by method name.
COEFFICIENTS = {"rk2_gated": StageGate, "pc": EMACoefficients}


def learned_coefficients(solver: SolverConfig | None, width: int) -> nn.Module | None:
    """The coefficients a layer of this ``width`` owns for ``solver``; None unless it is a learned block."""
    if solver is None or not solver.is_learned:
        return None
    return COEFFICIENTS[solver.method](width)


def match_coefficients(state_dict: dict, prefix: str, layer: nn.Module) -> None:
    """Fit a checkpoint's learned coefficients to ``layer`` before it loads (``prefix``: the layer's
    key prefix, e.g. ``encoder.layers.0``).

    A model trained with a learned block may be decoded with another method (elastic depth:
    ``--model-overrides "{'node_method': 'euler'}"``): its coefficients mean nothing to that method,
    so they are dropped. The reverse cannot work: a layer that needs coefficients the checkpoint
    does not have would run with untrained ones, so it is refused, naming the method.
    """
    key = f"{prefix}.coefficients." if prefix else "coefficients."
    stored = [name for name in state_dict if name.startswith(key)]
    if layer.coefficients is None:
        for name in stored:
            del state_dict[name]
    elif not stored:
        raise ValueError(f"{prefix or 'layer'}: node_method {layer.solver.method!r} is a learned block, but the "
                         f"checkpoint has no learned coefficients for it (it was trained with another method); "
                         f"decode it with a method of fixed coefficients")
