"""HF Transformers classes of the NODE-Transformer: the same model as fairseq's ``--arch node_transformer``.

The layers are :mod:`node_seq.nn`'s (the very modules the fairseq model uses); this file adds what
fairseq's ``TransformerModel`` adds around them, reproduced exactly so converted checkpoints give the
same numbers: scaled token embeddings plus fairseq's sinusoidal positions (counted over non-padding
tokens, so left and right padding are the same), embedding dropout, the layers, a final LayerNorm
(pre-norm layers), and an output projection (tied to the target embedding unless
``tie_word_embeddings=False``, like fairseq's ``--share-decoder-input-output-embed``).

Read top to bottom: helpers, the decoder cache, encoder and decoder stacks, the two models.
Shapes are batch-first: ``(batch, length, channels)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.generation.logits_process import ForcedEOSTokenLogitsProcessor, LogitsProcessor
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from ..nn.factory import configure_ode_layers, decoder_layer, encoder_layer, layer_spec
from ..nn.fields import FIELD_PROJECTIONS
from ..nn.layers import (
    RECOMPUTE, SELF_INITIALIZING, collect_stats, crop_cache, reorder_cache, total_regularizer, transformer_layers,
)
from ..ode import SolveStats
from .configuration_node_transformer import NodeTransformerConfig
from .remote_code import SavesCodeBundle


# --------------------------------------------------------------------------------------------------
# helpers

#: peft's ``target_modules`` for LoRA on either model (seq2seq or LM): every Linear layer of the ODE
#: blocks' vector fields, so the adapter changes the field the solver evaluates at every stage
#: (``docs/hf/peft.md``).
LORA_TARGET_MODULES = FIELD_PROJECTIONS

NO_ATTENTION_WEIGHTS = ("output_attentions: a NODE layer integrates attention over a solve, so there are no "
                        "attention weights to return")


def make_positions(keep: torch.Tensor, padding_idx: int, before: torch.Tensor | int = 0) -> torch.Tensor:
    """fairseq's positions: ``padding_idx + 1, + 2, ...`` over kept tokens, ``padding_idx`` at padding.

    ``before`` (batch,): real positions that precede these ones (already in a decoding cache).
    """
    keep = keep.long()
    before = before[:, None] if isinstance(before, torch.Tensor) else before
    return (torch.cumsum(keep, dim=1) + before) * keep + padding_idx


def resolve_output_flags(config: NodeTransformerConfig, output_attentions: bool | None,
                         output_hidden_states: bool | None, return_dict: bool | None) -> tuple[bool, bool]:
    """``(output_hidden_states, return_dict)``, each from the config unless the call set it; attention
    weights, which do not exist, are refused."""
    if config.output_attentions if output_attentions is None else output_attentions:
        raise NotImplementedError(NO_ATTENTION_WEIGHTS)
    return (config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.return_dict if return_dict is None else return_dict)


class SinusoidalPositions(nn.Module):
    """fairseq's ``SinusoidalPositionalEmbedding`` table (sin half, then cos half; zero row at padding).

    The table is a non-persistent buffer: checkpoints carry nothing for it, ``_init_weights``
    rebuilds it (a model built on the meta device gets it back), and a lookup never depends on
    the values of ``positions`` (so the model compiles and exports without data-dependent guards).
    """

    def __init__(self, dim: int, padding_idx: int, max_positions: int):
        super().__init__()
        self.dim, self.padding_idx, self.max_positions = dim, padding_idx, max_positions
        self.register_buffer("weight", self.compute_table(), persistent=False)

    def compute_table(self) -> torch.Tensor:
        """Rows ``0 .. padding_idx + max_positions``: every position fairseq can number."""
        num_positions = self.padding_idx + 1 + self.max_positions
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
        angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
        table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).view(num_positions, -1)
        if self.dim % 2:
            table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
        table[self.padding_idx, :] = 0
        return table

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions`` (batch, length) -> (batch, length, dim), float32 like fairseq's."""
        return nn.functional.embedding(positions, self.weight)


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start, y1, ..., y_{n-1}]`` (fairseq's prev_output_tokens)."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def layer_sizes(config: NodeTransformerConfig, side: str) -> dict:
    """One side's sizes in node_seq.nn's names (see :func:`node_seq.nn.factory.layer_spec`)."""
    names = (f"{side}_embed_dim", f"{side}_attention_heads", f"{side}_ffn_dim", "dropout", "attention_dropout",
             "activation_dropout")
    return {**{name: getattr(config, name) for name in names}, "activation": config.activation_function}


@dataclasses.dataclass
class NodeNFE:
    """Function evaluations of the ODE blocks, encoder and decoder apart.

    After a forward pass (``model.last_nfe``) it is that pass's solves; after ``generate``
    (``model.generation_nfe``) it is the encoder's solve plus every decoding step's, which is the
    NFE the batch went through (the loop's, under per-sequence control the work of its hardest row);
    an assistant's drafting passes are the assistant's own ``generate`` calls, not counted here.
    :attr:`per_sequence` is the same per input sequence.
    """

    encoder: SolveStats = dataclasses.field(default_factory=SolveStats)
    decoder: SolveStats = dataclasses.field(default_factory=SolveStats)
    decoder_passes: int = 0
    #: The input sequences and the decoder rows each has: ``generate``'s inputs and their beams (or
    #: samples, with ``num_return_sequences``); after a forward pass, the batch's rows, one each.
    sequences: int = 0
    rows_per_sequence: int = 1

    @property
    def nfe_forward(self) -> int:
        return self.encoder.nfe_forward + self.decoder.nfe_forward

    @property
    def per_sequence(self) -> torch.Tensor:
        """NFE of each input sequence, (sequences,) on the CPU: the encoder's for its row plus, per
        decoding pass, the mean over its rows. ``generate`` keeps input i's beams or samples in rows
        ``[i*k, (i+1)*k)`` and reorders beams only within them, so a row's NFE summed over the passes
        stays its input's. Every entry is :attr:`nfe_forward` without per-sequence control (batch-wide
        control, fixed grids); with it, a sequence's figure does not depend on its batch, except that
        ``generate`` keeps a finished sequence's rows in every pass until the whole batch is done."""
        encoder = self.encoder.nfe_per_row(self.sequences).cpu().double()
        decoder = self.decoder.nfe_per_row(self.sequences * self.rows_per_sequence).cpu().double()
        return encoder + decoder.view(self.sequences, self.rows_per_sequence).mean(1)

    def __add__(self, other: "NodeNFE") -> "NodeNFE":
        return NodeNFE(self.encoder + other.encoder, self.decoder + other.decoder,
                       self.decoder_passes + other.decoder_passes, max(self.sequences, other.sequences),
                       max(self.rows_per_sequence, other.rows_per_sequence))


# --------------------------------------------------------------------------------------------------
# the decoder cache


class NodeCacheLayer(CacheLayerMixin):
    """One decoder layer's incremental state: the plain dict that :class:`NodeDecoderLayer` fills.

    On a fixed grid it holds keys/values per position *and per solver evaluation* (plus the
    projected encoder output); for an adaptive solver it holds the layer's input prefix, which the
    layer re-solves. Either way it is exact, beam search reorders every tensor in it, and
    :meth:`crop` (assisted decoding's rollback) keeps the first positions exactly: a position's
    states at every stage depend only on the positions before it.

    It is not a key/value cache in transformers' layout (no ``keys``/``values`` per layer): code
    that reads those directly does not apply to it.
    """

    is_croppable = True

    def __init__(self):
        super().__init__()
        self.state: dict = {}
        self.length = 0

    def lazy_initialization(self, key_states=None, value_states=None) -> None:
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        raise NotImplementedError("a NODE decoder layer fills its own cache (per solver stage); it has no update()")

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.state.clear()
        self.length = 0

    def offload(self):
        """Nothing to offload: the cache is as small as a few layers' keys/values."""

    def prefetch(self):
        """See :meth:`offload`."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        reorder_cache(self.state, beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last ``-tokens_to_remove`` positions (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of positions to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or self.length == 0:
            return
        self.length = max(self.length + tokens_to_remove, 0)
        crop_cache(self.state, self.length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        reorder_cache(self.state, indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        batch = next(iter(_tensors(self.state)), None)
        if batch is not None:
            reorder_cache(self.state, torch.arange(batch.shape[0], device=batch.device).repeat_interleave(repeats))


def _tensors(state: dict):
    for value in state.values():
        if isinstance(value, dict):
            yield from _tensors(value)
        elif isinstance(value, tuple):
            yield from value
        elif isinstance(value, torch.Tensor):
            yield value


class NodeCache(Cache):
    """The ``cache`` of a NODE-Transformer decoder: one :class:`NodeCacheLayer` per layer, and which
    cached positions are real (decoder inputs may be padded; padding is never attended to)."""

    def __init__(self, num_layers: int):
        super().__init__(layers=[NodeCacheLayer() for _ in range(num_layers)])
        self.keep: torch.Tensor | None = None  # (batch, cached positions), False at padding

    def advance(self, keep: torch.Tensor) -> None:
        """Record the positions being cached (``keep``: (batch, new), False at padding)."""
        self.keep = keep if self.keep is None else torch.cat([self.keep, keep], dim=1)
        for layer in self.layers:
            layer.length += keep.shape[1]
            layer.is_initialized = True

    def real_positions(self, batch: int, device: torch.device) -> torch.Tensor:
        """How many non-padding positions each row has cached: (batch,)."""
        if self.keep is None:
            return torch.zeros(batch, dtype=torch.long, device=device)
        return self.keep.sum(dim=1)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.keep is not None:
            self.keep = self.keep.index_select(0, beam_idx.to(self.keep.device))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.keep is not None:
            self.keep = self.keep[indices]

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.keep is not None:
            self.keep = self.keep.repeat_interleave(repeats, dim=0)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.keep is not None:
            self.keep = self.keep[:, : self.get_seq_length()]


# --------------------------------------------------------------------------------------------------
# encoder and decoder stacks


def node_cache_for(cache: Cache | None, num_layers: int) -> NodeCache:
    """The cache to decode with: ``cache`` if it is a :class:`NodeCache`, else a fresh one (an empty
    cache of another kind, as callers may pass, is replaced; a filled one cannot be used)."""
    if isinstance(cache, NodeCache):
        return cache
    if cache is None or cache.get_seq_length() == 0:
        return NodeCache(num_layers)
    raise TypeError(f"a NODE-Transformer decoder caches per solver stage and needs a NodeCache, "
                    f"got a filled {type(cache).__name__}")


def _check_length(length: int, config: NodeTransformerConfig, what: str) -> None:
    if length > config.max_position_embeddings:
        raise ValueError(f"{what} has {length} positions, more than max_position_embeddings="
                         f"{config.max_position_embeddings}")


def _keep_mask(mask: torch.Tensor | None, ids: torch.Tensor | None, embeds: torch.Tensor | None,
               padding_idx: int) -> torch.Tensor:
    """Real (True) and padding (False) positions: from the attention mask, else the ids, else all real."""
    if mask is not None:
        return mask.to(torch.bool)
    if ids is not None:
        return ids.ne(padding_idx)
    return torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)


def _one_of(ids: torch.Tensor | None, embeds: torch.Tensor | None, ids_name: str, embeds_name: str) -> None:
    if (ids is None) == (embeds is None):
        raise ValueError(f"pass exactly one of {ids_name} and {embeds_name}")


class NodeTransformerEncoder(nn.Module):
    """Embeddings, the encoder layers and a final LayerNorm (no branch on tensor values)."""

    main_input_name = "input_ids"

    def __init__(self, config: NodeTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        dim, self.padding_idx = config.encoder_embed_dim, config.pad_token_id
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_positions = SinusoidalPositions(dim, self.padding_idx, config.max_position_embeddings)
        self.dropout = nn.Dropout(config.dropout)
        spec, options = layer_spec(layer_sizes(config, "encoder"), "encoder"), config.node_options()
        self.layers = nn.ModuleList(encoder_layer(spec, options) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if options.final_layer_norm("encoder") else None
        self.last_stats = SolveStats()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None) -> BaseModelOutput:
        """``inputs_embeds`` are what ``get_input_embeddings()`` returns for the ids (scaled here)."""
        config = self.config
        output_hidden_states, return_dict = resolve_output_flags(config, output_attentions, output_hidden_states,
                                                                 return_dict)
        _one_of(input_ids, inputs_embeds, "input_ids", "inputs_embeds")
        keep = _keep_mask(attention_mask, input_ids, inputs_embeds, self.padding_idx)
        _check_length(keep.shape[1], config, "the source")
        padding_mask = ~keep
        tokens = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        x = self.embed_scale * tokens + self.embed_positions(make_positions(keep, self.padding_idx))
        x = self.dropout(x) * keep.unsqueeze(-1).type_as(x)  # (batch, source, embed), zero at padding
        states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, padding_mask)
            if states is not None:
                states.append(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        self.last_stats = collect_stats(self)
        out = BaseModelOutput(last_hidden_state=x, hidden_states=tuple(states) if states is not None else None)
        return out if return_dict else out.to_tuple()


class NodeTransformerDecoder(nn.Module):
    """Embeddings, the decoder layers (per-stage cache while generating) and a final LayerNorm."""

    def __init__(self, config: NodeTransformerConfig, embed_tokens: nn.Embedding, *, cross_attention: bool = True):
        """``cross_attention=False``: the layers of a decoder-only LM (``encoder_hidden_states`` is None)."""
        super().__init__()
        self.config = config
        dim, self.padding_idx = config.decoder_embed_dim, config.pad_token_id
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_positions = SinusoidalPositions(dim, self.padding_idx, config.max_position_embeddings)
        self.dropout = nn.Dropout(config.dropout)
        spec, options = layer_spec(layer_sizes(config, "decoder"), "decoder"), config.node_options()
        encoder_dim = config.encoder_embed_dim if cross_attention else None
        self.layers = nn.ModuleList(decoder_layer(spec, options, encoder_dim=encoder_dim)
                                    for _ in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if options.final_layer_norm("decoder") else None
        self.last_stats = SolveStats()

    def forward(self, input_ids: torch.Tensor | None, encoder_hidden_states: torch.Tensor | None,
                encoder_padding_mask: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: NodeCache | None = None, inputs_embeds: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, tuple | None]:
        """``input_ids`` (batch, new) or ``inputs_embeds`` (batch, new, embed); with ``cache`` only
        the positions after the cached ones (several at once attend causally among themselves)."""
        _one_of(input_ids, inputs_embeds, "decoder_input_ids", "decoder_inputs_embeds")
        tokens = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        batch, new = tokens.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        _check_length(past + new, self.config, "the target")
        if attention_mask is not None and attention_mask.shape[1] == past + new:
            attention_mask = attention_mask[:, past:]  # generate's mask covers the cached positions too
        if attention_mask is not None and attention_mask.shape[1] != new:
            raise ValueError(f"decoder_attention_mask has {attention_mask.shape[1]} positions; expected {new} "
                             f"(the new ones) or {past + new} (cached and new)")
        keep = _keep_mask(attention_mask, input_ids, inputs_embeds, self.padding_idx)  # (batch, new)
        # causal over cached and new keys; one new position may see every key
        self_mask = None
        if cache is None or new > 1:
            self_mask = torch.ones(new, past + new, dtype=torch.bool, device=tokens.device).triu_(past + 1)
        if cache is None:
            positions = make_positions(keep, self.padding_idx)
            self_padding = ~keep
        else:  # numbered and masked as if the whole prefix were passed at once
            positions = make_positions(keep, self.padding_idx, before=cache.real_positions(batch, tokens.device))
            cache.advance(keep)  # the layers extend their states below
            self_padding = ~cache.keep
        x = self.embed_scale * tokens + self.embed_positions(positions)
        x = self.dropout(x)  # (batch, target, embed)
        states = [x] if output_hidden_states else None
        for index, layer in enumerate(self.layers):
            x = layer(x, encoder_hidden_states, encoder_padding_mask, self_attn_mask=self_mask,
                      self_attn_padding_mask=self_padding,
                      cache=cache.layers[index].state if cache is not None else None)
            if states is not None:
                states.append(x)
        self.last_stats = collect_stats(self)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x, (tuple(states) if states is not None else None)


# --------------------------------------------------------------------------------------------------
# the models


class NodeTransformerPreTrainedModel(SavesCodeBundle, PreTrainedModel):
    config: NodeTransformerConfig
    config_class = NodeTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NodeEncoderLayer", "NodeDecoderLayer"]

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func: Callable = RECOMPUTE,
                                    every_n_layers: int = 1) -> None:
        """transformers' activation checkpointing, per NODE-Transformer layer: a layer keeps only its input
        and recomputes its solve in the backward pass, for every method and for plain layers (the
        ODE's own ``node_gradient="checkpoint"`` is for fixed grids only, and keeps a state per step).
        Layers whose ``node_gradient`` is not ``backprop`` keep their mode (see ``_NodeLayer.recomputes``).

        ``every_n_layers`` counts the encoder's layers, then the decoder's. Turning it off also removes
        the input-embedding hook that turning it on added, so the model is as it was.
        """
        if isinstance(every_n_layers, bool) or not isinstance(every_n_layers, int) or every_n_layers < 1:
            raise ValueError(f"every_n_layers: must be an integer >= 1, got {every_n_layers!r}")
        if enable:  # transformers adds the hook after this; it is ours to remove unless one was there before
            self._checkpointing_added_input_hook = not getattr(self, "_require_grads_hooks", None)
        elif getattr(self, "_checkpointing_added_input_hook", False):
            self.disable_input_require_grads()
            self._checkpointing_added_input_hook = False
        for index, layer in enumerate(transformer_layers(self)):
            layer.gradient_checkpointing = enable and index % every_n_layers == 0
            layer.checkpoint_function = gradient_checkpointing_func if enable else RECOMPUTE

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """fairseq's initialisation of every parameter and buffer (each module reached once).

        node_seq's layers initialise themselves (``reset_parameters``, the very code their
        constructors run), so a model built on the meta device and materialised with
        ``to_empty`` + ``init_weights`` equals a freshly built one in distribution and in every
        deterministic value (LayerNorms, identity projections, zero rows, position tables). Only
        guarded ``init`` calls are used, so weights loaded by ``from_pretrained`` are left alone.
        """
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=module.embedding_dim ** -0.5)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif type(module) is nn.Linear:  # the output projection (or its resized copy): node_seq.nn's own
            # linears are subclasses that initialise themselves
            if module.weight is not self.get_decoder().embed_tokens.weight:  # tied: the embedding's own init
                init.normal_(module.weight, mean=0.0, std=module.in_features ** -0.5)
        elif isinstance(module, SinusoidalPositions):
            init.copy_(module.weight, module.compute_table())
        elif isinstance(module, (nn.LayerNorm, *SELF_INITIALIZING)):
            module.reset_parameters()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """transformers ties nothing when ``tie_word_embeddings=False``; here that flag decides the
        output projection alone, and ``share_all_embeddings``' one input embedding stays one."""
        if all_submodels:
            return super().get_expanded_tied_weights_keys(all_submodels=True)
        tie_output = self.config.tie_word_embeddings
        return {target: source for target, source in (self._tied_weights_keys or {}).items()
                if tie_output or not target.startswith("lm_head.")}

    @classmethod
    def from_pretrained(cls, *args, strict: bool = False, **kwargs):
        """``PreTrainedModel.from_pretrained``; ``strict=True`` refuses weights that do not match the config.

        By default transformers' convention holds: weights missing from the checkpoint are
        initialised (``_init_weights``, fairseq's init) and named in transformers' loading report (a
        warning), so are checkpoint weights the model does not use, and a weight of another shape is
        an error unless ``ignore_mismatched_sizes=True``. ``strict=True`` (what ``torch``'s
        ``load_state_dict`` calls it) raises instead, naming every missing, unused or mis-shaped
        weight: ``node_seq.hf.cli.translate`` loads so, since translating with layers at their
        random init is worse than an error.
        """
        if not strict:
            return super().from_pretrained(*args, **kwargs)
        wants_info = kwargs.get("output_loading_info", False)
        ignore_mismatched = kwargs.get("ignore_mismatched_sizes", False)
        kwargs["output_loading_info"] = True
        kwargs["ignore_mismatched_sizes"] = True  # report mismatches below, by name and shape
        model, info = super().from_pretrained(*args, **kwargs)
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing from the checkpoint: {sorted(info['missing_keys'])}")
        if info.get("unexpected_keys"):
            problems.append(f"not used by {cls.__name__}: {sorted(info['unexpected_keys'])}")
        if info.get("mismatched_keys") and not ignore_mismatched:
            shapes = [f"{key} (checkpoint {tuple(old)}, model {tuple(new)})" for key, old, new in
                      sorted(info["mismatched_keys"])]
            problems.append(f"shapes differ from the config: {shapes}")
        if problems:
            where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise ValueError(f"{cls.__name__}.from_pretrained({where!r}, strict=True): the weights do not match "
                             "the config; " + "; ".join(problems))
        return (model, info) if wants_info else model


class NodeTransformerModel(NodeTransformerPreTrainedModel):
    """Encoder and decoder without the output projection (``AutoModel``)."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: NodeTransformerConfig):
        config.check()  # also catches fields changed after the config was made
        super().__init__(config)
        encoder_embed = nn.Embedding(config.vocab_size, config.encoder_embed_dim, config.pad_token_id)
        if config.share_all_embeddings:
            decoder_embed = encoder_embed
            self._tied_weights_keys = {"decoder.embed_tokens.weight": "encoder.embed_tokens.weight"}
        else:
            decoder_embed = nn.Embedding(config.decoder_vocab_size, config.decoder_embed_dim, config.pad_token_id)
        self.encoder = NodeTransformerEncoder(config, encoder_embed)
        self.decoder = NodeTransformerDecoder(config, decoder_embed)
        self.last_nfe = NodeNFE()
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embed_tokens = value
        if self.config.share_all_embeddings:
            self.decoder.embed_tokens = value

    def resize_token_embeddings(self, *args, **kwargs) -> nn.Embedding:
        """The source side's embedding, which is also the target side's with ``share_all_embeddings``."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        if self.config.share_all_embeddings:
            self.config.decoder_vocab_size = embeddings.num_embeddings
        return embeddings

    def get_decoder(self) -> NodeTransformerDecoder:
        return self.decoder

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: BaseModelOutput | tuple | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None) -> Seq2SeqModelOutput:
        """Encode (unless ``encoder_outputs`` are given) and decode.

        Unset flags come from the config (``use_cache``, ``output_hidden_states``,
        ``output_attentions``, ``return_dict``). A cache is kept outside training when
        ``use_cache`` (a :class:`NodeCache`: decoding continues after its positions).
        """
        config = self.config
        output_hidden_states, return_dict = resolve_output_flags(config, output_attentions, output_hidden_states,
                                                                 return_dict)
        use_cache = (config.use_cache if use_cache is None else use_cache) and not self.training
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("decoder_input_ids or decoder_inputs_embeds is required "
                             "(or labels, with NodeTransformerForConditionalGeneration)")
        encoder_stats = SolveStats()
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds,
                                           output_hidden_states=output_hidden_states, return_dict=True)
            encoder_stats = self.encoder.last_stats
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        if attention_mask is not None:
            encoder_padding_mask = ~attention_mask.to(torch.bool)
        elif input_ids is not None:
            encoder_padding_mask = input_ids.eq(config.pad_token_id)
        else:
            encoder_padding_mask = None
        node_cache = node_cache_for(cache, config.decoder_layers) if use_cache else None
        hidden, decoder_states = self.decoder(decoder_input_ids, encoder_outputs.last_hidden_state,
                                              encoder_padding_mask, decoder_attention_mask, node_cache,
                                              inputs_embeds=decoder_inputs_embeds,
                                              output_hidden_states=output_hidden_states)
        self.last_nfe = NodeNFE(encoder=encoder_stats, decoder=self.decoder.last_stats, decoder_passes=1,
                                sequences=hidden.shape[0])
        out = Seq2SeqModelOutput(
            last_hidden_state=hidden, cache=node_cache, decoder_hidden_states=decoder_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
        )
        return out if return_dict else out.to_tuple()


class EOSScoreBeforeRules(LogitsProcessor):
    """Runs first: keeps ``</s>``'s score at the last allowed position before any rule changes it."""

    def __init__(self, max_length: int, eos: torch.Tensor):
        self.max_length, self.eos = max_length, eos
        self.scores: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] == self.max_length - 1:
            self.scores = scores[:, self.eos.to(scores.device)].clone()
        return scores


class EOSAtMaxLength(LogitsProcessor):
    """At the last allowed position only ``</s>`` remains, with its own score (fairseq's rule).

    transformers' ``ForcedEOSTokenLogitsProcessor`` gives the forced ``</s>`` a log-probability of
    0 instead, which changes how beam search ranks hypotheses that reach the length limit. If
    another rule banned ``</s>`` at that position (``min_length``, ``min_new_tokens``,
    ``bad_words_ids``), the length limit wins, as in fairseq: ``</s>`` gets the score it had
    before the rules (recorded by :attr:`before_rules`, which must run first), so no row is left
    without an admissible token.
    """

    def __init__(self, max_length: int, eos_token_id: int | list[int] | torch.Tensor):
        self.max_length = max_length
        self.eos = torch.as_tensor(eos_token_id).view(-1)
        self.before_rules = EOSScoreBeforeRules(max_length, self.eos)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        eos = self.eos.to(scores.device)
        eos_scores = scores[:, eos]
        if self.before_rules.scores is not None:
            eos_scores = torch.where(torch.isneginf(eos_scores), self.before_rules.scores, eos_scores)
        forced = torch.full_like(scores, -math.inf)
        forced[:, eos] = eos_scores
        return forced


class NodeHeadMixin:
    """What the seq2seq and LM heads share: the plumbing transformers expects of a model with an
    output projection, the per-stage cache for ``generate``, NFE counts and the regularised loss.

    The head holds its base model as ``self.model`` (with ``.decoder`` and ``last_nfe``) and its
    output projection as ``self.lm_head``; ``__init__`` ends with :meth:`_init_head`.
    """

    def _init_head(self, config) -> None:
        self.generation_nfe = NodeNFE()
        self._tally: NodeNFE | None = None  # while generating: this generate call's count so far
        self.regularizer_weights = configure_ode_layers(self, config.node_options())
        self.post_init()

    # -- plumbing transformers expects
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> NodeTransformerDecoder:
        return self.model.decoder

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # keys/values are cached per solver stage: a NodeCache, made below

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs) -> None:
        """A fresh :class:`NodeCache` before the first step (assisted decoding needs one from the start)."""
        if model_kwargs.get("cache") is None and generation_config.use_cache:
            model_kwargs["cache"] = NodeCache(self.config.decoder_layers)
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    # -- NFE and the loss
    @property
    def last_nfe(self) -> NodeNFE:
        """The NFE of the last forward pass (encoder part zero when ``encoder_outputs`` were given)."""
        return self.model.last_nfe

    @property
    def nfe_backward(self) -> int:
        """Backward NFE of the last backward pass through the last forward pass's solves."""
        return collect_stats(self).nfe_backward

    #: ``Trainer`` passes ``num_items_in_batch`` to ``forward`` (see :meth:`_loss`).
    accepts_loss_kwargs = True

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor,
              num_items_in_batch: torch.Tensor | int | None) -> torch.Tensor:
        """Cross-entropy of ``logits`` (..., vocab) against ``labels`` (-100: not scored) plus each
        regulariser's weight times its value while training.

        Without ``num_items_in_batch`` the mean over this batch's scored tokens. With it (``Trainer``
        counts the scored tokens of a whole update: every process, every accumulated micro-batch) the
        sum over this batch divided by that count, and each regulariser weighted by this batch's share
        of the tokens: the gradient summed over processes and micro-batches is then one process's
        over the whole update, not a mean of per-batch means (which weights a short batch's tokens more).
        """
        labels = labels.reshape(-1)
        scored = labels.ne(-100).sum()
        total = scored if num_items_in_batch is None else num_items_in_batch
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=-100,
                                           reduction="sum") / total
        share = scored / total
        for name, weight in self.regularizer_weights.items():
            value = total_regularizer(self, name)  # None outside training mode
            if value is not None:
                loss = loss + weight * share * value
        return loss

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """``GenerationMixin.generate``, counting the NFE every sequence went through (``generation_nfe``).

        Each call counts its own passes: an assistant that runs ``generate`` inside this one (this
        very model, or another NODE model) keeps its drafting passes out of this call's count.
        """
        outer, self._tally = self._tally, NodeNFE()
        try:
            return super().generate(inputs, generation_config, **kwargs)
        finally:
            self.generation_nfe, self._tally = self._tally, outer

    def _maybe_prepare_encoder_kwargs_for_generation(self, inputs_tensor: torch.Tensor, model_kwargs: dict,
                                                     *args, **kwargs) -> dict:
        """Counts the encoder's solve (none when ``encoder_outputs`` were given). An assistant that is
        this model encodes the same source again here, with the same count: it is recorded, not added."""
        encodes = self.config.is_encoder_decoder and model_kwargs.get("encoder_outputs") is None
        model_kwargs = super()._maybe_prepare_encoder_kwargs_for_generation(inputs_tensor, model_kwargs, *args,
                                                                            **kwargs)
        if encodes and self._tally is not None:
            self._tally.encoder = self.get_encoder().last_stats
        return model_kwargs

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.Tensor | None = None, **model_kwargs):
        """Notes how many sequences ``generate`` was given and how many rows each gets (its beams or
        samples), which ``generation_nfe.per_sequence`` groups the decoder's rows by."""
        if self._tally is not None and input_ids is not None:
            self._tally.sequences, self._tally.rows_per_sequence = input_ids.shape[0], expand_size
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs: dict, *args, **kwargs) -> dict:
        """Counts each decoding pass's NFE: generate calls this after every forward pass, outside it,
        so a compiled forward stays one graph."""
        if self._tally is not None:
            self._tally += NodeNFE(decoder=self.model.last_nfe.decoder, decoder_passes=1)
        return super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)


#: Generation defaults that reproduce ``fairseq-generate``'s (see ``NodeTransformerForConditionalGeneration``).
FAIRSEQ_GENERATION_DEFAULTS = dict(
    num_beams=5, early_stopping=True, length_penalty=1.0, min_length=2, max_len_a=0.0, max_len_b=200,
)


class NodeTransformerForConditionalGeneration(NodeHeadMixin, NodeTransformerPreTrainedModel, GenerationMixin):
    """Encoder-decoder with the output projection: training loss, ``generate``, NFE counts.

    ``generate`` follows fairseq-generate's rules by default (``generation_config``): beam 5,
    length penalty 1, a hypothesis is final once ``num_beams`` have ended (``early_stopping``),
    at least one token before ``</s>``, ``<pad>`` never generated, and at most
    ``max_len_a * source_length + max_len_b`` tokens before a final ``</s>`` (which keeps its own
    score). NFE: ``last_nfe`` after a forward pass, ``generation_nfe`` after ``generate``.
    """

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: NodeTransformerConfig):
        super().__init__(config)
        self.model = NodeTransformerModel(config)
        self.lm_head = nn.Linear(config.decoder_embed_dim, config.decoder_vocab_size, bias=False)
        if config.share_all_embeddings:
            self._tied_weights_keys = {
                "lm_head.weight": "model.encoder.embed_tokens.weight",
                "model.decoder.embed_tokens.weight": "model.encoder.embed_tokens.weight",
            }
        self._init_head(config)
        defaults = dict(FAIRSEQ_GENERATION_DEFAULTS, forced_eos_token_id=config.eos_token_id,
                        suppress_tokens=[config.pad_token_id])
        for name, value in defaults.items():
            setattr(self.generation_config, name, value)
        self.generation_config._from_model_config = False  # else max_len_a/b would not be read back

    def _resize_token_embeddings(self, new_num_tokens: int | None, pad_to_multiple_of: int | None = None,
                                 mean_resizing: bool = True) -> nn.Embedding:
        """``resize_token_embeddings`` resizes the source side (``vocab_size``). With
        ``share_all_embeddings`` that embedding is the target side's too, and the output projection
        follows it (re-tied if tied); with two embeddings the target side is left as it is
        (:meth:`resize_decoder_token_embeddings` resizes it), as Marian does."""
        if self.config.share_all_embeddings:
            embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
            self.config.decoder_vocab_size = embeddings.num_embeddings
            return embeddings
        embeddings = self._get_resized_embeddings(self.get_input_embeddings(), new_num_tokens, pad_to_multiple_of,
                                                  mean_resizing)
        self.set_input_embeddings(embeddings)
        return embeddings

    def resize_decoder_token_embeddings(self, new_num_tokens: int | None, pad_to_multiple_of: int | None = None,
                                        mean_resizing: bool = True) -> nn.Embedding:
        """Resize the target side (``decoder_vocab_size``): the decoder's embedding and the output
        projection (re-tied if tied). With ``share_all_embeddings`` there is one embedding: use
        ``resize_token_embeddings``."""
        if self.config.share_all_embeddings:
            raise ValueError("resize_decoder_token_embeddings: with share_all_embeddings=True the source and target "
                             "share one embedding; resize it with resize_token_embeddings")
        decoder = self.get_decoder()
        embeddings = self._get_resized_embeddings(decoder.embed_tokens, new_num_tokens, pad_to_multiple_of,
                                                  mean_resizing)
        decoder.embed_tokens = embeddings
        self.lm_head = self._get_resized_lm_head(self.lm_head, embeddings.num_embeddings, mean_resizing=mean_resizing)
        self.config.decoder_vocab_size = embeddings.num_embeddings
        self.tie_weights()
        return embeddings

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                encoder_outputs: BaseModelOutput | tuple | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, decoder_inputs_embeds: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None,
                num_items_in_batch: torch.Tensor | int | None = None) -> Seq2SeqLMOutput:
        """:meth:`NodeTransformerModel.forward`, then logits, and with ``labels`` the loss.

        The loss is the mean cross-entropy over tokens whose label is not -100 (with
        ``num_items_in_batch``, ``Trainer``'s count of the update's scored tokens: their sum divided
        by it), plus each regulariser's weight times its value while training (``node_kinetic_weight``, ...).
        """
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                             cache, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                             output_hidden_states, return_dict=True)
        logits = self.lm_head(outputs.last_hidden_state)  # (batch, target, vocab)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels, num_items_in_batch)
        out = Seq2SeqLMOutput(
            loss=loss, logits=logits, cache=outputs.cache,
            decoder_hidden_states=outputs.decoder_hidden_states,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return out if return_dict else out.to_tuple()

    # -- generation
    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, *,
                 max_len_a: float | None = None, max_len_b: int | None = None, **kwargs):
        """``GenerationMixin.generate`` with fairseq's length rule and an NFE count.

        ``max_len_a``/``max_len_b`` (arguments, else the generation config's) bound the output
        to ``min(max_len_a * source_width + max_len_b, max_position_embeddings - 1)`` tokens plus
        ``</s>``, where the source width is the padded batch width, as in fairseq; an explicit
        ``max_length``/``max_new_tokens`` takes precedence.
        """
        config = generation_config if generation_config is not None else self.generation_config
        if "max_length" not in kwargs and "max_new_tokens" not in kwargs:
            a = max_len_a if max_len_a is not None else getattr(config, "max_len_a", None)
            b = max_len_b if max_len_b is not None else getattr(config, "max_len_b", None)
            source = next((x for x in (inputs, kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if x is not None), None)
            if (a is not None or b is not None) and source is not None:
                limit = min(int((a or 0.0) * source.shape[1] + (b or 0)), self.config.max_position_embeddings - 1)
                kwargs["max_length"] = limit + 2  # decoder start + tokens + </s>
        if kwargs.get("num_beams", config.num_beams) == 1 and "early_stopping" not in kwargs:
            kwargs["early_stopping"] = False  # a beam-search flag; silence the warning for greedy
        return super().generate(inputs, generation_config, **kwargs)

    def _get_logits_processor(self, generation_config, *args, **kwargs):
        processors = super()._get_logits_processor(generation_config, *args, **kwargs)
        for index, processor in enumerate(processors):
            if isinstance(processor, ForcedEOSTokenLogitsProcessor):
                processors[index] = EOSAtMaxLength(processor.max_length, processor.eos_token_id)
                processors.insert(0, processors[index].before_rules)
                break
        return processors


__all__ = [
    "EOSAtMaxLength", "LORA_TARGET_MODULES", "NodeCache", "NodeHeadMixin", "NodeNFE",
    "NodeTransformerForConditionalGeneration", "NodeTransformerModel", "NodeTransformerPreTrainedModel",
]
