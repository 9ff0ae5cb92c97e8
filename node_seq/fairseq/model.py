"""``--arch node_transformer``: fairseq's Transformer with NODE encoder and/or decoder layers.

The model is fairseq's legacy ``TransformerModel`` (embeddings, positions, output projection,
beam search, checkpoints) with its layers swapped for :mod:`node_seq.nn` layers. Plain layers,
when ``--no-node-encoder``/``--no-node-decoder``, are the same modules taking one unit Euler
step, which is exactly a pre-norm Transformer layer; so every configuration has one parameter
layout, and the HF model loads any of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Dict, Iterator, Optional

import torch
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.logging import metrics
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerDecoder, TransformerEncoder, TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture, transformer_iwslt_de_en

from ..nn.coefficients import match_coefficients
from ..nn.factory import configure_ode_layers, decoder_layer, encoder_layer, layer_spec
from ..nn.layers import (
    NodeDecoderLayer, NodeEncoderLayer, check_finite, collect_stats, is_ode_layer, reorder_cache,
)
from ..nn.options import NodeOptions
from ..ode import NonFiniteState, OptionError, compile_settings
from . import options
from .nfe_logging import BackwardNFELogger, GenerationNFE, count_generation_nfe, log_forward_nfe

#: The options of the model ``build_model`` is building. fairseq builds the encoder and decoder through
#: classmethods that it hands only the namespace; the one validated object reaches them through this.
_BUILDING: contextvars.ContextVar[NodeOptions] = contextvars.ContextVar("node_options")


@contextlib.contextmanager
def _building(node_options: NodeOptions) -> Iterator[None]:
    token = _BUILDING.set(node_options)
    try:
        yield
    finally:
        _BUILDING.reset(token)


def _options_being_built() -> NodeOptions:
    try:
        return _BUILDING.get()
    except LookupError:
        raise RuntimeError("the NODE encoder and decoder are built by NodeTransformerModel.build_model, "
                           "which validates their options once") from None


class FairseqNodeEncoderLayer(NodeEncoderLayer):
    """fairseq's encoder-layer call convention: time-first ``(length, batch, embed)``."""

    def forward(self, x, encoder_padding_mask: Optional[torch.Tensor] = None, attn_mask: Optional[torch.Tensor] = None):
        return super().forward(x.transpose(0, 1), encoder_padding_mask, attn_mask).transpose(0, 1)

    def upgrade_state_dict_named(self, state_dict, name):
        """fairseq calls this on load: a learned block's coefficients follow the method loaded with."""
        match_coefficients(state_dict, name, self)


@with_incremental_state
class FairseqNodeDecoderLayer(NodeDecoderLayer):
    """fairseq's decoder-layer call convention; the cache lives in fairseq's ``incremental_state``."""

    use_cache: bool = True

    def forward(self, x, encoder_out=None, encoder_padding_mask=None, incremental_state=None,
                prev_self_attn_state=None, prev_attn_state=None, self_attn_mask=None,
                self_attn_padding_mask=None, need_attn: bool = False, need_head_weights: bool = False):
        cache = None
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "node_cache")
            if cache is None:
                cache = {}
                self.set_incremental_state(incremental_state, "node_cache", cache)
            if not self.use_cache:
                cache.setdefault("recompute", True)
            # fairseq's masks cover only the new token here, and its decoding never pads a prefix
            self_attn_mask = self_attn_padding_mask = None
        enc = None if encoder_out is None else encoder_out.transpose(0, 1)
        if cache is not None and cache.get("recompute"):
            out = self._forward_recompute_prefix(x.transpose(0, 1), enc, encoder_padding_mask, cache)
        else:
            out = super().forward(x.transpose(0, 1), enc, encoder_padding_mask, self_attn_mask=self_attn_mask,
                                  self_attn_padding_mask=self_attn_padding_mask, cache=cache)
        return out.transpose(0, 1), None, None

    def upgrade_state_dict_named(self, state_dict, name):
        """fairseq calls this on load: a learned block's coefficients follow the method loaded with."""
        match_coefficients(state_dict, name, self)

    def reorder_incremental_state(self, incremental_state: Dict[str, Dict[str, Optional[torch.Tensor]]],
                                  new_order: torch.Tensor):
        cache = self.get_incremental_state(incremental_state, "node_cache")
        if cache is not None:
            self.set_incremental_state(incremental_state, "node_cache", reorder_cache(cache, new_order))
        return incremental_state


class NodeTransformerEncoder(TransformerEncoder):
    generation_nfe: Optional[GenerationNFE] = None  # set by NodeTransformerModel.prepare_for_inference_

    def __init__(self, args, dictionary, embed_tokens, node_options: NodeOptions):
        self.node_options = node_options  # before fairseq's __init__, which builds the layers (fairseq sets args so)
        super().__init__(args, dictionary, embed_tokens)

    def build_encoder_layer(self, cfg):
        return encoder_layer(layer_spec(options.layer_sizes(self.args, "encoder"), "encoder"), self.node_options,
                             FairseqNodeEncoderLayer)

    def forward(self, src_tokens, src_lengths=None, return_all_hiddens: bool = False, token_embeddings=None):
        out = super().forward(src_tokens, src_lengths, return_all_hiddens, token_embeddings)
        check_finite(self)  # compiled layers (--node-compile) leave it to here: one look per pass, not per solve
        if self.generation_nfe is not None:
            self.generation_nfe.start_batch(collect_stats(self).nfe_per_row(src_tokens.shape[0], src_tokens.device))
        return out


class NodeTransformerDecoder(TransformerDecoder):
    generation_nfe: Optional[GenerationNFE] = None  # set by NodeTransformerModel.prepare_for_inference_

    def __init__(self, args, dictionary, embed_tokens, node_options: NodeOptions, no_encoder_attn: bool = False):
        self.node_options = node_options  # before fairseq's __init__, which builds the layers
        super().__init__(args, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)

    def build_decoder_layer(self, cfg, no_encoder_attn: bool = False):
        node_options = self.node_options
        layer = decoder_layer(layer_spec(options.layer_sizes(self.args, "decoder"), "decoder"), node_options,
                              encoder_dim=self.args.encoder_embed_dim, layer_class=FairseqNodeDecoderLayer)
        layer.use_cache = node_options.incremental_cache or not node_options.decoder
        return layer

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        out = super().forward(prev_output_tokens, encoder_out=encoder_out, incremental_state=incremental_state,
                              **kwargs)
        check_finite(self)
        if self.generation_nfe is not None and incremental_state is not None:  # one decoding step
            # each row's sentence, kept in the incremental state so that fairseq's beam reordering and
            # dropping of finished sentences reorder it too (reorder_incremental_state)
            state = self.get_incremental_state(incremental_state, "node_sentence")
            nfe = collect_stats(self).nfe_per_row(prev_output_tokens.shape[0], prev_output_tokens.device)
            sentence = self.generation_nfe.add_step(nfe, None if state is None else state["sentence"])
            self.set_incremental_state(incremental_state, "node_sentence", {"sentence": sentence})
        return out

    def reorder_incremental_state(self, incremental_state, new_order: torch.Tensor) -> None:
        """fairseq calls this on every module of the decoder; the layers reorder their own caches."""
        state = self.get_incremental_state(incremental_state, "node_sentence")
        if state is not None:
            self.set_incremental_state(incremental_state, "node_sentence",
                                       {"sentence": state["sentence"].index_select(0, new_order)})


@register_model("node_transformer")
class NodeTransformerModel(TransformerModel):
    """A Transformer whose encoder and/or decoder layers are ODE blocks (node-seq)."""

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self._backward_nfe = BackwardNFELogger(self)
        self._fallbacks_logged = 0
        self.nfe_logged_by_task = False  # --task node_translation logs NFE summed over workers
        # node_translation adds the regularisers to the loss; the layers integrate them while training
        self.regularizer_weights = configure_ode_layers(self, encoder.node_options)
        if encoder.node_options.compile:
            compile_layers(self)

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        options.add_node_args(parser)

    @classmethod
    def build_model(cls, args, task):
        with _building(node_base_architecture(args)):
            return super().build_model(args, task)

    def prepare_for_inference_(self, cfg):
        """fairseq-generate, fairseq-interactive and the hub interface call this before decoding (and
        the model cannot train afterwards): from here on, encoder and decoder count NFE per sentence
        for the ``NODE NFE`` line."""
        super().prepare_for_inference_(cfg)
        self.encoder.generation_nfe = self.decoder.generation_nfe = count_generation_nfe()

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return NodeTransformerEncoder(args, src_dict, embed_tokens, _options_being_built())

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return NodeTransformerDecoder(args, tgt_dict, embed_tokens, _options_being_built(),
                                      no_encoder_attn=getattr(args, "no_cross_attention", False))

    def forward(self, src_tokens, src_lengths, prev_output_tokens, return_all_hiddens: bool = True,
                features_only: bool = False, alignment_layer=None, alignment_heads=None):
        inputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
                 for layer in self.ode_layers()]
        run = functools.partial(super().forward, src_tokens, src_lengths, prev_output_tokens,
                                return_all_hiddens=return_all_hiddens, features_only=features_only,
                                alignment_layer=alignment_layer, alignment_heads=alignment_heads)
        try:
            with compile_settings():
                out = run()
        except NonFiniteState:
            # A compiled layer's solve failed; it could not fall back inside its graph. Redo the pass
            # eagerly, where every solve checks itself and the policy acts as it does uncompiled.
            if _policy(self) != "fallback":
                raise
            inputs.clear()
            with torch.compiler.set_stance("force_eager"):
                out = run()
        finally:
            for hook in hooks:
                hook.remove()
        if not self.nfe_logged_by_task:
            self._log_own_counts(inputs)
        return out

    def _log_own_counts(self, layer_inputs: list[torch.Tensor]) -> None:
        """NFE and fallbacks of this worker, through fairseq's metrics (any task)."""
        log_forward_nfe(self)
        fallbacks = sum(layer.fallbacks for layer in self.ode_layers())
        if fallbacks > self._fallbacks_logged:
            metrics.log_scalar_sum("node_fallbacks", fallbacks - self._fallbacks_logged, priority=702)
            self._fallbacks_logged = fallbacks
        if torch.is_grad_enabled():
            self._backward_nfe.watch(layer_inputs)

    def ode_layers(self):
        return [layer for layer in [*self.encoder.layers, *self.decoder.layers] if is_ode_layer(layer)]


#: torch.compile's arguments for ``--node-compile`` besides ``fullgraph`` (the tests pick a quicker backend).
COMPILE_OPTIONS = {"backend": "inductor"}


def compile_layers(model: TransformerModel) -> None:
    """``--node-compile``: compile the ``forward`` of every node-seq layer, fullgraph on a fixed grid.

    The layers, not the model: fairseq's own code around them (embeddings, logging, beam search)
    stays as it is, and the per-stage decoding cache lives in fairseq's ``incremental_state``.
    Only ``forward`` is replaced, so the module (its hooks, ``state_dict`` and checkpoints) is unchanged.
    """
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        fixed = layer.solver is None or layer.solver.is_fixed_grid
        layer.forward = torch.compile(layer.forward, fullgraph=fixed, **COMPILE_OPTIONS)


def _policy(model) -> str:
    layers = model.ode_layers()
    return layers[0].failure.policy if layers else "raise"


def _validated(args) -> NodeOptions:
    try:
        return options.validate(args)
    except OptionError as error:
        raise SystemExit(f"node_transformer: error: {error}") from None


@register_model_architecture("node_transformer", "node_transformer")
def node_base_architecture(args) -> NodeOptions:
    """Complete ``args`` and return their NODE options, validated (fairseq applies this while parsing and
    before it builds a model; :meth:`NodeTransformerModel.build_model` to the args it builds from)."""
    options.fill_defaults(args)
    base_architecture(args)
    node_options = _validated(args)
    # ODE blocks are pre-norm (the branch, not the normalised sum, is the vector field), and so are
    # plain layers unless --node-plain-norm post; fairseq adds a side's final LayerNorm for pre-norm.
    args.encoder_normalize_before = node_options.final_layer_norm("encoder")
    args.decoder_normalize_before = node_options.final_layer_norm("decoder")
    return node_options


@register_model_architecture("node_transformer", "node_transformer_tiny")
def node_transformer_tiny(args):
    """A CPU-sized model: 2+2 layers, width 64 (for tests and the embedded demo)."""
    options.default_sizes(args, ("encoder", "decoder"), dim=64, ffn=128, heads=4, layers=2)
    node_base_architecture(args)


@register_model_architecture("node_transformer", "node_transformer_small")
def node_transformer_small(args):
    """3+3 layers, width 256: the Multi30k recipe's size."""
    options.default_sizes(args, ("encoder", "decoder"), dim=256, ffn=1024, heads=4, layers=3)
    node_base_architecture(args)


@register_model_architecture("node_transformer", "node_transformer_iwslt_de_en")
def node_transformer_iwslt_de_en(args):
    """The sizes of fairseq's ``transformer_iwslt_de_en`` (512 wide, 1024 FFN, 4 heads, 6+6 layers)."""
    transformer_iwslt_de_en(args)
    node_base_architecture(args)
