"""The vector fields of NODE-Transformer layers: a pre-norm layer's residual branch.

For a pre-norm layer ``x -> x + g(x)`` the field is ``f(t, x) = g(x)``, so one Euler step of size
one is exactly the layer, and ``n`` unit Euler steps are a weight-tied stack of ``n`` layers.
Parameter names follow fairseq's ``TransformerEncoderLayer``/``TransformerDecoderLayer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ode import current_stage
from .attention import MultiheadAttention
from .dropout import FrozenDropout
from .linear import UniformLinear

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu}

#: The Linear layers a field applies, by attribute name: its attention's projections (self- and
#: cross-attention, :class:`MultiheadAttention`) and its feed-forward block's. Each is called as a
#: module, so a wrapper put in its place (a LoRA adapter) changes the field at every evaluation.
FIELD_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


class FeedForward(nn.Module):
    """``fc2(dropout(act(fc1(norm(x)))))``, with fairseq's names and fairseq's initialisation."""

    def __init__(self, dim: int, hidden: int, *, activation: str, activation_dropout: float):
        super().__init__()
        self.final_layer_norm = nn.LayerNorm(dim)
        self.fc1 = UniformLinear(dim, hidden)
        self.fc2 = UniformLinear(hidden, dim)
        self.activation = ACTIVATIONS[activation]
        self.activation_dropout = FrozenDropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(self.final_layer_norm(x))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The block without its LayerNorm (a post-norm layer normalises after the residual sum)."""
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))


class TimeEmbedding(nn.Module):
    """Lets the field see ``t``: adds ``t * w`` (a learned vector) to the state it reads."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)  # t is invisible until training says otherwise

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x + t.to(x.dtype) * self.weight


class EncoderField(nn.Module):
    """``f(t, x) = a + ffn(x + a)`` with ``a = self_attn(norm(x))``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, *, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, time_dependent: bool):
        super().__init__()
        self.time = TimeEmbedding(dim) if time_dependent else None
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = MultiheadAttention(dim, heads, dropout=attention_dropout)
        self.ffn = FeedForward(dim, ffn_dim, activation=activation, activation_dropout=activation_dropout)
        self.attn_dropout = FrozenDropout(dropout)
        self.ffn_dropout = FrozenDropout(dropout)

    def forward(self, t: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x_in = self.time(t, x) if self.time is not None else x
        h = self.self_attn_layer_norm(x_in)
        a = self.attn_dropout(self.self_attn.attend(h, *self.self_attn.project_kv(h, h), bias))
        return a + self.ffn_dropout(self.ffn(x_in + a))

    def post_norm_layer(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The same modules as a post-norm layer, ``LN(x + sublayer(x))`` per sublayer (fairseq's
        ``TransformerEncoderLayer`` without ``normalize_before``); a plain layer only."""
        x = self.self_attn_layer_norm(x + self.attn_dropout(self.self_attn.attend(x, *self.self_attn.project_kv(x, x),
                                                                                   bias)))
        return self.ffn.final_layer_norm(x + self.ffn_dropout(self.ffn.branch(x)))


class DecoderField(nn.Module):
    """``f(t, x) = a + c + ffn(x + a + c)``: self-attention, cross-attention, feed-forward.

    With ``self_attention=False`` (the separated decoder) the field keeps only cross-attention and
    the feed-forward block; the layer applies self-attention once, outside the ODE. With
    ``cross_attention=False`` (a decoder-only language model) there is no ``c``: the field of a
    pre-norm GPT-style block, whose encoder arguments are ``None``.

    ``cache`` (a dict, only while decoding incrementally on a fixed grid) holds this field's keys
    and values per evaluation index: the state of earlier positions at step ``i``, stage ``j`` is
    what the new position must attend to at the same step and stage.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, *, encoder_dim: int, dropout: float,
                 attention_dropout: float, activation_dropout: float, activation: str, time_dependent: bool,
                 self_attention: bool = True, cross_attention: bool = True):
        super().__init__()
        self.time = TimeEmbedding(dim) if time_dependent else None
        if self_attention:
            self.self_attn_layer_norm = nn.LayerNorm(dim)
            self.self_attn = MultiheadAttention(dim, heads, dropout=attention_dropout)
            self.self_dropout = FrozenDropout(dropout)
        else:
            self.self_attn = None
        if cross_attention:
            self.encoder_attn_layer_norm = nn.LayerNorm(dim)
            self.encoder_attn = MultiheadAttention(dim, heads, dropout=attention_dropout, kdim=encoder_dim,
                                                   vdim=encoder_dim)
        else:
            self.encoder_attn = None
        self.ffn = FeedForward(dim, ffn_dim, activation=activation, activation_dropout=activation_dropout)
        self.cross_dropout = FrozenDropout(dropout) if cross_attention else None
        self.ffn_dropout = FrozenDropout(dropout)

    def forward(self, t: torch.Tensor, x: torch.Tensor, encoder_k: torch.Tensor, encoder_v: torch.Tensor,
                encoder_bias: torch.Tensor | None, self_bias: torch.Tensor | None,
                cache: dict | None) -> torch.Tensor:
        x_in = self.time(t, x) if self.time is not None else x
        update = None
        if self.self_attn is not None:
            h = self.self_attn_layer_norm(x_in)
            k, v = self.self_attn.project_kv(h, h)
            if cache is not None:
                k, v = extend_cache(cache, evaluation_key(), k, v)
                if self_bias is None:  # no masks given: attend to everything cached, causally among the new
                    self_bias = cached_causal_bias(h.shape[1], k.shape[2], h.dtype, h.device)
            update = self.self_dropout(self.self_attn.attend(h, k, v, self_bias))
            x_in = x_in + update
        if self.encoder_attn is not None:
            c = self.cross_dropout(self.encoder_attn.attend(self.encoder_attn_layer_norm(x_in), encoder_k, encoder_v,
                                                            encoder_bias))
            update = c if update is None else update + c
            x_in = x_in + c
        if update is None:  # neither attention inside the field: a separated decoder-only layer
            return self.ffn_dropout(self.ffn(x_in))
        return update + self.ffn_dropout(self.ffn(x_in))

    def post_norm_layer(self, x: torch.Tensor, encoder_k: torch.Tensor, encoder_v: torch.Tensor,
                        encoder_bias: torch.Tensor | None, self_bias: torch.Tensor | None,
                        cache: dict | None) -> torch.Tensor:
        """The same modules as a post-norm layer (fairseq's ``TransformerDecoderLayer`` without
        ``normalize_before``); a plain layer only, so its cache has the one evaluation."""
        k, v = self.self_attn.project_kv(x, x)
        if cache is not None:
            k, v = extend_cache(cache, evaluation_key(), k, v)
            if self_bias is None:
                self_bias = cached_causal_bias(x.shape[1], k.shape[2], x.dtype, x.device)
        x = self.self_attn_layer_norm(x + self.self_dropout(self.self_attn.attend(x, k, v, self_bias)))
        x = self.encoder_attn_layer_norm(x + self.cross_dropout(self.encoder_attn.attend(x, encoder_k, encoder_v,
                                                                                          encoder_bias)))
        return self.ffn.final_layer_norm(x + self.ffn_dropout(self.ffn.branch(x)))


def evaluation_key() -> int:
    stage = current_stage()
    if stage is None:
        raise RuntimeError("a per-stage key/value cache needs a fixed-grid solve")
    return stage.index


def cached_causal_bias(new: int, total: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """Causal mask for ``new`` positions appended after ``total - new`` cached ones (None for one)."""
    if new == 1:
        return None
    query = torch.arange(total - new, total, device=device)[:, None]
    blocked = torch.arange(total, device=device)[None, :] > query
    return torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill_(blocked, torch.finfo(dtype).min)


def extend_cache(cache: dict, key, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the new positions' keys/values to ``cache[key]`` and return the full sequence."""
    if key in cache:
        prev_k, prev_v = cache[key]
        k, v = torch.cat([prev_k, k], dim=2), torch.cat([prev_v, v], dim=2)
    cache[key] = (k, v)
    return k, v
