"""NODE-Transformer layers: a pre-norm layer's residual branch, integrated as an ODE.

Plain torch, batch-first ``(batch, length, channels)``; the fairseq and HF front ends wrap these
same modules. Each layer keeps the :class:`~node_seq.ode.SolveStats` of its last solve in
``last_stats`` (the backward NFE is filled in by ``.backward()``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from ..ode import (
    DEFAULT_FALLBACK, ODESolveError, SolverConfig, SolveStats, Stage, evaluated_rows, solve, stage_scope,
)
from ..ode.embedded import row_rms_norm
from ..ode.precision import controller_dtype
from ..ode.solve import non_finite_error
from ..ode.regularization import solve_with_regularizers
from .attention import MultiheadAttention, attention_bias, twice_differentiable
from .coefficients import EMACoefficients, learned_coefficients
from .dropout import FrozenDropout, reset_frozen_dropout
from .fields import DecoderField, EncoderField, TimeEmbedding, cached_causal_bias, extend_cache
from .linear import ChannelDrop, UniformLinear, XavierLinear


#: What a layer does when its solve fails (max steps, step-size underflow, non-finite state):
#: ``raise`` an error naming the layer, ``fallback``: redo that solve on a fixed grid, or ``skip``:
#: raise as ``raise`` does, for a training loop that skips the batch (fairseq's ``node_translation``).
FAILURE_POLICIES = ("raise", "fallback", "skip")

#: How a layer under ``gradient_checkpointing`` recomputes its solve unless a front end says otherwise
#: (HF passes its own ``torch.utils.checkpoint`` options).
RECOMPUTE: Callable = functools.partial(checkpoint, use_reentrant=False)


@dataclasses.dataclass(frozen=True)
class FailurePolicy:
    """How a training run survives a solve that cannot finish (see :data:`FAILURE_POLICIES`)."""

    policy: str = "raise"
    fallback: SolverConfig = DEFAULT_FALLBACK

    def __post_init__(self):
        if self.policy not in FAILURE_POLICIES:
            raise ValueError(f"failure policy must be one of {', '.join(FAILURE_POLICIES)}, got {self.policy!r}")
        if not self.fallback.is_fixed_grid:
            raise ValueError(f"the fallback solver must use a fixed grid, got {self.fallback.method!r}")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Sizes and regularisation of one layer (the same for NODE and plain layers)."""

    embed_dim: int
    num_heads: int
    ffn_dim: int
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"


def padding_rms_norm(keep: torch.Tensor | None, *, rows: bool = False):
    """Adaptive error norm over real positions only: padding must not steer the step size.

    ``rows``: one RMS per row of the batch, over that row's real positions (per-row step control),
    instead of one over the batch. Summed in at least float32
    (:func:`~node_seq.ode.precision.controller_dtype`): a bfloat16 sum over a batch of squares would
    round away the small errors that decide the step. A compacted per-row step passes the error
    of the rows it evaluates (:func:`~node_seq.ode.evaluated_rows`), weighed by those rows' keep."""
    if keep is None:
        return row_rms_norm if rows else None
    batch_weight = keep.to(torch.float32)[..., None]
    dims = (1, 2) if rows else (0, 1, 2)

    def norm(error: torch.Tensor) -> torch.Tensor:
        error = error.to(controller_dtype(error))
        evaluated = evaluated_rows()
        weight = batch_weight if evaluated is None else batch_weight.index_select(0, evaluated)
        if error.dim() != 3 or error.shape[:2] != weight.shape[:2]:
            return row_rms_norm(error) if rows else error.pow(2).mean().sqrt()
        total = (weight.to(error.dtype) * error.pow(2)).sum(dims)
        return (total / (weight.sum(dims) * error.shape[-1]).clamp_min(1)).sqrt()

    return norm


def _mean_over(values: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The mean of per-position ``values`` over real (non-padding) positions."""
    if keep is None:
        return values.mean()
    weight = keep.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1)


class _NodeLayer(nn.Module):
    """What encoder and decoder layers share: augmentation, the solve, dropout resets, stats.

    ``solver=None`` makes a plain pre-norm layer (``x + f(x)``, one unit Euler step without a
    solver's bookkeeping), or with ``post_norm`` a post-norm layer of the same modules. Whether a
    layer is an ODE is said this way only, never read off the solver's settings: an ODE layer of
    one Euler step (ResNet-as-ODE) still counts its NFE and integrates its regularisers.

    A learned block (``rk2_gated``, ``pc``) owns its learned coefficients (``self.coefficients``,
    see :mod:`.coefficients`: one set per layer) and passes them to every solve.
    """

    def __init__(self, spec: LayerSpec, solver: SolverConfig | None, *, augment_dims: int, post_norm: bool = False):
        super().__init__()
        if post_norm and solver is not None:
            raise ValueError("post_norm: only a plain layer (solver None) can be post-norm; an ODE layer's field is "
                             "its pre-norm branch")
        self.post_norm = post_norm
        self.solver = solver
        self.augment_dims = augment_dims
        self.width = spec.embed_dim + augment_dims
        if augment_dims:
            # Back to the model width; starts as "drop the extra channels" (the wider state is
            # not the plain layer's: LayerNorm and the attention heads see the zero channels).
            self.project = ChannelDrop(self.width, spec.embed_dim)
        self.coefficients = learned_coefficients(solver, self.width)
        self.last_stats = SolveStats(method=solver.method if solver is not None else "")
        self.failure = FailurePolicy()
        self.fallbacks = 0  # solves redone on the fallback grid since the layer was built
        self.layer_name = type(self).__name__  # front ends set the module path, e.g. "decoder.layers.2"
        # Training only: integrals integrated alongside the state ("kinetic", "jacobian"; loss terms
        # the front end adds, see node_seq.ode.regularization), averaged over real positions.
        self.regularizers: tuple[str, ...] = ()
        self.last_regularizers: dict[str, torch.Tensor] = {}
        # Activation checkpointing of the whole solve (see ``integrate``), switched on by a front end:
        # HF's ``gradient_checkpointing_enable`` finds layers by the first name.
        self.gradient_checkpointing = False
        self.checkpoint_function: Callable = RECOMPUTE

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, self.augment_dims)) if self.augment_dims else x

    def project_back(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) if self.augment_dims else x

    @property
    def recomputes(self) -> bool:
        """Whether :attr:`gradient_checkpointing` applies to this layer: a plain layer, or an ODE layer
        whose gradient mode stores every step (``backprop``). The other modes already trade compute
        for memory their own way (``checkpoint``: one state per step; ``adjoint``, ``reversible``: no
        step kept), and recomputing them would only solve forward once more."""
        return self.solver is None or self.solver.gradient == "backprop"

    def integrate(self, field: nn.Module, x: torch.Tensor, inputs: tuple, keep: torch.Tensor | None, *,
                  cached: bool = False) -> torch.Tensor:
        """The layer's solve (one Euler step for a plain layer); under :attr:`gradient_checkpointing`
        while training, kept as its input only and recomputed in the backward pass. ``cached``: the
        field writes a decoding cache, which a recompute would write twice (never checkpointed)."""
        if (self.gradient_checkpointing and self.recomputes and self.training and torch.is_grad_enabled()
                and not cached):
            return self._integrate_recomputed(field, x, inputs, keep)
        return self._integrate(field, x, inputs, keep)

    def _integrate_recomputed(self, field: nn.Module, x: torch.Tensor, inputs: tuple,
                              keep: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_integrate` through :attr:`checkpoint_function`. The recompute draws the same dropout
        masks (the function restores the RNG, and a solve draws its frozen masks afresh) and takes the
        same steps, so the gradients are those of the solve without it. What the first run recorded
        stays: ``last_stats`` (with the recompute's evaluations as backward NFE, as the ODE's own
        ``checkpoint`` mode counts them), the regularisers' values, the fallback count."""
        first: SolveStats | None = None  # the stats of the forward run

        def run(x: torch.Tensor, *inputs) -> tuple[torch.Tensor, ...]:
            nonlocal first
            records = (self.last_stats, self.last_regularizers, self.fallbacks)
            y = self._integrate(field, x, inputs, keep)
            out = (y, *self.last_regularizers.values())
            if first is None:
                first = self.last_stats
            else:  # the recompute, inside .backward(): its work is backward work of the forward run's solve
                first.nfe_backward += self.last_stats.nfe_forward
                self.last_stats, self.last_regularizers, self.fallbacks = records
            return out

        # Early stop would end the recompute at the last tensor the backward needs, mid-solve: no
        # count of its evaluations, and the first run's records half overwritten.
        with set_checkpoint_early_stop(False):
            y, *integrals = self.checkpoint_function(run, x, *inputs)
        self.last_regularizers = dict(zip(self.last_regularizers, integrals))
        return y

    def _integrate(self, field: nn.Module, x: torch.Tensor, inputs: tuple, keep: torch.Tensor | None) -> torch.Tensor:
        reset_frozen_dropout(field)
        if self.solver is None:  # a plain layer: one unit Euler step, without a solver's bookkeeping
            t = x.new_zeros(())
            with stage_scope(Stage(0, 0, 1, t)):
                return field.post_norm_layer(x, *inputs) if self.post_norm else x + field(t, x, *inputs)
        norm = padding_rms_norm(keep, rows=self.solver.per_row)
        self.last_regularizers = {}
        try:
            if self.regularizers and self.training:
                y, integrals, stats = solve_with_regularizers(
                    field, x, self.solver, kinetic="kinetic" in self.regularizers,
                    jacobian="jacobian" in self.regularizers, twice_differentiable=twice_differentiable,
                    inputs=inputs, norm=norm)
                self.last_regularizers = {name: _mean_over(value, keep) for name, value in integrals.items()}
            else:
                # A learned block's coefficients mean nothing to another method (an elastic-depth sweep
                # may swap the solver of a trained rk2_gated layer for euler): they are left out.
                coefficients = self.coefficients if self.solver.is_learned else None
                y, stats = solve(field, x, self.solver, inputs=inputs, norm=norm, coefficients=coefficients)
        except ODESolveError as error:
            if self.failure.policy != "fallback":
                raise error.in_layer(self.layer_name) from error
            fallback = dataclasses.replace(self.failure.fallback, t0=self.solver.t0, t1=self.solver.t1,
                                           gradient="checkpoint" if self.solver.gradient != "backprop" else "backprop")
            y, stats = solve(field, x, fallback, inputs=inputs)
            self.fallbacks += 1
        self.last_stats = stats
        return y


class NodeEncoderLayer(_NodeLayer):
    """``x -> x(t1)`` where ``dx/dt = self_attn + ffn`` (a pre-norm encoder layer's branch)."""

    def __init__(self, spec: LayerSpec, solver: SolverConfig | None, *, augment_dims: int = 0,
                 time_dependent: bool = False, post_norm: bool = False):
        super().__init__(spec, solver, augment_dims=augment_dims, post_norm=post_norm)
        self.field = EncoderField(self.width, spec.num_heads, spec.ffn_dim, dropout=spec.dropout,
                                  attention_dropout=spec.attention_dropout,
                                  activation_dropout=spec.activation_dropout, activation=spec.activation,
                                  time_dependent=time_dependent)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (batch, length, embed); ``padding_mask``: (batch, length), True at padding."""
        bias = attention_bias(key_padding_mask=padding_mask, attn_mask=attn_mask, dtype=x.dtype)
        keep = None if padding_mask is None else ~padding_mask.to(torch.bool)
        return self.project_back(self.integrate(self.field, self.augment(x), (bias,), keep))


class NodeDecoderLayer(_NodeLayer):
    """A decoder layer as an ODE; optionally with self-attention kept outside (``separated``).

    Incremental decoding (``cache`` given) is exact in both regimes:

    * fixed grid: keys/values are cached per position and per solver evaluation, so a new token
      costs one solve of one position;
    * adaptive: the evaluation times depend on the whole sequence, so the layer keeps its input
      prefix and re-solves it for every new token (cost grows with the length: O(T^2) overall).
    """

    def __init__(self, spec: LayerSpec, solver: SolverConfig | None, *, encoder_dim: int | None = None,
                 augment_dims: int = 0, time_dependent: bool = False, separated: bool = False,
                 post_norm: bool = False, cross_attention: bool = True):
        super().__init__(spec, solver, augment_dims=augment_dims, post_norm=post_norm)
        self.separated = separated
        self.cross_attention = cross_attention  # False: a decoder-only LM's layer (``encoder_out`` is None)
        if separated:
            self.self_attn_layer_norm = nn.LayerNorm(self.width)
            self.self_attn = MultiheadAttention(self.width, spec.num_heads, dropout=spec.attention_dropout)
            self.self_dropout = FrozenDropout(spec.dropout)
        self.field = DecoderField(self.width, spec.num_heads, spec.ffn_dim, encoder_dim=encoder_dim or spec.embed_dim,
                                  dropout=spec.dropout, attention_dropout=spec.attention_dropout,
                                  activation_dropout=spec.activation_dropout, activation=spec.activation,
                                  time_dependent=time_dependent, self_attention=not separated,
                                  cross_attention=cross_attention)

    @property
    def caches_per_stage(self) -> bool:
        return self.solver is None or self.solver.is_fixed_grid

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None, encoder_padding_mask: torch.Tensor | None = None,
                self_attn_mask: torch.Tensor | None = None, self_attn_padding_mask: torch.Tensor | None = None,
                cache: dict | None = None) -> torch.Tensor:
        """``x``: (batch, length, embed) target states; ``encoder_out``: (batch, source, enc_embed), or
        ``None`` for a layer without cross-attention.

        Without ``cache`` the layer sees the whole target prefix and needs ``self_attn_mask``
        (causal). With ``cache`` it sees only the new positions; the masks then cover every key,
        cached and new (``self_attn_mask``: (new, all), ``self_attn_padding_mask``: (batch, all)),
        and without them the new positions attend to everything cached and causally among
        themselves (fairseq's incremental decoding passes none).
        """
        if cache is not None and not self.caches_per_stage:
            return self._forward_recompute_prefix(x, encoder_out, encoder_padding_mask, cache, self_attn_padding_mask)
        x = self.augment(x)
        enc_k, enc_v = self._encoder_kv(encoder_out, cache)
        enc_bias = attention_bias(key_padding_mask=encoder_padding_mask, dtype=x.dtype)
        self_bias = attention_bias(key_padding_mask=self_attn_padding_mask, attn_mask=self_attn_mask, dtype=x.dtype)
        if self.separated:  # outside the solve: fresh dropout masks per pass, not ones kept for every batch
            reset_frozen_dropout(self.self_attn)
            self.self_dropout.reset()
            h = self.self_attn_layer_norm(x)
            k, v = self.self_attn.project_kv(h, h)
            bias = self_bias
            if cache is not None:
                k, v = extend_cache(cache, "separated_self_attn", k, v)
                if bias is None:
                    bias = cached_causal_bias(h.shape[1], k.shape[2], h.dtype, h.device)
            x = x + self.self_dropout(self.self_attn.attend(h, k, v, bias))
        keep = None if self_attn_padding_mask is None or cache is not None else ~self_attn_padding_mask.to(torch.bool)
        field_cache = cache.setdefault("stages", {}) if cache is not None else None
        y = self.integrate(self.field, x, (enc_k, enc_v, enc_bias, self_bias, field_cache), keep, cached=cache is not None)
        return self.project_back(y)

    def _encoder_kv(self, encoder_out: torch.Tensor | None, cache: dict | None) -> tuple:
        """Project the encoder output once per solve (once per sentence when decoding)."""
        if not self.cross_attention:
            return None, None
        if cache is not None and "encoder_kv" in cache:
            return cache["encoder_kv"]
        kv = self.field.encoder_attn.project_kv(encoder_out, encoder_out)
        if cache is not None:
            cache["encoder_kv"] = kv
        return kv

    def _forward_recompute_prefix(self, x, encoder_out, encoder_padding_mask, cache, self_attn_padding_mask=None):
        """``self_attn_padding_mask``, if given, covers the whole prefix (cached and new positions)."""
        prefix = torch.cat([cache["prefix"], x], dim=1) if "prefix" in cache else x
        cache["prefix"] = prefix
        length = prefix.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).triu_(1)
        # NodeDecoderLayer.forward, not self.forward: front ends override forward's conventions.
        out = NodeDecoderLayer.forward(self, prefix, encoder_out, encoder_padding_mask, self_attn_mask=causal,
                                       self_attn_padding_mask=self_attn_padding_mask)
        return out[:, -x.shape[1]:]


def reorder_cache(cache: dict, new_order: torch.Tensor) -> dict:
    """Select batch rows of every cached tensor (beam search reordering), in place."""
    for key, value in cache.items():
        if isinstance(value, dict):
            reorder_cache(value, new_order)
        elif isinstance(value, tuple):
            cache[key] = tuple(v.index_select(0, new_order) for v in value)
        elif isinstance(value, torch.Tensor):
            cache[key] = value.index_select(0, new_order)
    return cache


def crop_cache(cache: dict, length: int) -> dict:
    """Keep the first ``length`` target positions of every cached tensor, in place.

    Exact: a decoder position's keys/values at every solver evaluation (and an adaptive layer's
    input prefix) depend only on the positions before it. The encoder projection is kept whole.
    """
    for key, value in cache.items():
        if key == "stages":
            for stage, (k, v) in value.items():
                value[stage] = (k[:, :, :length], v[:, :, :length])
        elif key == "separated_self_attn":
            cache[key] = (value[0][:, :, :length], value[1][:, :, :length])
        elif key == "prefix":
            cache[key] = value[:, :length]
    return cache


def is_ode_layer(module: nn.Module) -> bool:
    """A layer that integrates an ODE (not a plain layer built from the same modules)."""
    return isinstance(module, _NodeLayer) and module.solver is not None


def transformer_layers(module: nn.Module) -> list[_NodeLayer]:
    """Every NODE-Transformer layer inside ``module``, ODE or plain, in module order."""
    return [m for m in module.modules() if isinstance(m, _NodeLayer)]


def node_layers(module: nn.Module) -> list[_NodeLayer]:
    return [m for m in module.modules() if is_ode_layer(m)]


def collect_stats(module: nn.Module) -> SolveStats:
    """The sum of the last solve of every ODE layer inside ``module`` (plain layers excluded)."""
    total = SolveStats()
    for layer in node_layers(module):
        total = total + layer.last_stats
    return total


#: The spread across rows of one forward pass's NFE (:func:`row_nfe_spread`), as the training logs name it.
ROW_NFE_KEYS = ("nfe_row_mean", "nfe_row_sd", "nfe_row_min", "nfe_row_max")


def row_nfe_spread(module: nn.Module) -> dict[str, float]:
    """How the forward NFE of the last pass spread across the rows of its batch (every ODE layer inside
    ``module``; a row's is what its own steps needed): mean, standard deviation, min and max, under
    :data:`ROW_NFE_KEYS`. Empty unless a layer controlled its steps per row: without that every row
    took the pass's ``nfe_forward``."""
    rows = collect_stats(module).row_nfe
    if rows is None:
        return {}
    rows = rows.double()
    values = torch.stack([rows.mean(), rows.std(unbiased=False), rows.min(), rows.max()]).tolist()
    return dict(zip(ROW_NFE_KEYS, values))


def check_finite(module: nn.Module) -> None:
    """Raise :class:`~node_seq.ode.NonFiniteState`, naming the layer, if a compiled solve of the last
    forward pass ended in inf/nan.

    A solve inside ``torch.compile`` cannot stop the graph to look (that is a host synchronisation
    per solve); it leaves its answer in ``last_stats.finite`` instead. This reads every layer's
    at once, one synchronisation per call: call it once per step, after the forward pass. Eager
    solves have checked themselves already (and left nothing to read), so this costs nothing there.
    """
    flagged = [layer for layer in node_layers(module) if layer.last_stats.finite is not None]
    if not flagged or bool(torch.stack([layer.last_stats.finite for layer in flagged]).all()):
        return
    layer = next(layer for layer in flagged if not bool(layer.last_stats.finite))
    raise non_finite_error(layer.solver, layer.last_stats).in_layer(layer.layer_name)


def total_regularizer(module: nn.Module, name: str) -> torch.Tensor | None:
    """The sum over ODE layers of their last solve's ``name`` integral (None if none integrated it)."""
    values = [layer.last_regularizers[name] for layer in node_layers(module) if name in layer.last_regularizers]
    return torch.stack(values).sum() if values else None


def enable_regularizers(module: nn.Module, *, kinetic: float = 0.0, jacobian: float = 0.0) -> dict[str, float]:
    """Make every ODE layer of ``module`` integrate the regularisers with a weight > 0 while training;
    return those weights by name, for the front end that adds them to its loss."""
    weights = {name: weight for name, weight in (("kinetic", kinetic), ("jacobian", jacobian)) if weight > 0}
    for layer in node_layers(module):
        layer.regularizers = tuple(weights)
    return weights


#: The node_seq modules that own parameters and initialise them in ``reset_parameters`` (which
#: their constructors run); a front end that re-initialises a model (HF's ``_init_weights``) calls it.
SELF_INITIALIZING = (XavierLinear, UniformLinear, ChannelDrop, TimeEmbedding, EMACoefficients)
