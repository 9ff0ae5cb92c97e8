"""Multi-head attention in plain torch, with fairseq's parameter names.

The projections are named ``q_proj``/``k_proj``/``v_proj``/``out_proj`` like
``fairseq.modules.MultiheadAttention``, so a fairseq Transformer's weights load unchanged, and the
fairseq and HF front ends share one implementation. Keys and values are projected separately from
queries (:meth:`project_kv`) so that a NODE layer can project the encoder output once per solve,
and a decoder can keep per-stage key/value caches.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .dropout import FrozenDropout
from .linear import XavierLinear


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0, kdim: int | None = None,
                 vdim: int | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        # fairseq's init: q/k/v as one joint projection (gain 1/sqrt(2), nn.Linear's bias), out_proj plain
        qkv = dict(gain=2 ** -0.5, zero_bias=False)
        self.k_proj = XavierLinear(kdim or embed_dim, embed_dim, **qkv)
        self.v_proj = XavierLinear(vdim or embed_dim, embed_dim, **qkv)
        self.q_proj = XavierLinear(embed_dim, embed_dim, **qkv)
        self.out_proj = XavierLinear(embed_dim, embed_dim)
        self.dropout = FrozenDropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape  # (batch, length, embed) -> (batch, heads, length, head_dim)
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(self.k_proj(key)), self._heads(self.v_proj(value))

    def attend(self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Attention of ``query`` (batch, length, embed) over projected ``k``/``v``.

        ``bias`` is additive, broadcastable to (batch, heads, length, keys).
        """
        batch, length, _ = query.shape
        q = self._heads(self.q_proj(query))
        if self.training and self.dropout.p > 0:
            scores = (q * self.head_dim ** -0.5) @ k.transpose(-1, -2)
            if bias is not None:
                scores = scores + bias
            out = self.dropout(scores.softmax(-1)) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))


def twice_differentiable() -> contextlib.AbstractContextManager:
    """Attention that can be differentiated twice (the Jacobian regulariser's Hutchinson term):
    of the fused kernels ``scaled_dot_product_attention`` may pick, only the math one has a second
    derivative."""
    return sdpa_kernel([SDPBackend.MATH])


def attention_bias(*, key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                   dtype: torch.dtype) -> torch.Tensor | None:
    """One additive mask (batch or 1, 1, queries or 1, keys) from fairseq-style masks.

    ``key_padding_mask`` is (batch, keys), True at padding; ``attn_mask`` is (queries, keys),
    either boolean (True = blocked) or additive (``-inf`` = blocked). Blocked entries get the
    dtype's most negative value rather than ``-inf``, so no row can turn into NaN.
    """
    blocked = None
    if attn_mask is not None:
        as_bool = attn_mask if attn_mask.dtype == torch.bool else torch.isinf(attn_mask) & (attn_mask < 0)
        blocked = as_bool[None, None]
    if key_padding_mask is not None:
        pad = key_padding_mask.to(torch.bool)[:, None, None, :]
        blocked = pad if blocked is None else blocked | pad
    if blocked is None:
        return None
    return torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill_(blocked, torch.finfo(dtype).min)
