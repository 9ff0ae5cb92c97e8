"""``--arch node_transformer_lm``: fairseq's decoder-only Transformer LM with NODE layers.

fairseq's ``TransformerLanguageModel`` (embeddings, positions, output projection, ``fairseq-eval-lm``,
sampling and beam search) whose layers are the seq2seq model's decoder layers without
cross-attention: the same :class:`~node_seq.nn.layers.NodeDecoderLayer`, so the per-stage key/value
cache (fixed grids), prefix recompute (adaptive solvers), failure policies and NFE counting are
those of ``--arch node_transformer``. ``--no-node-decoder`` makes a plain pre-norm Transformer LM
of the same parameters (the baseline of a comparison).

Use ``--task language_modeling``, or ``--task node_language_modeling`` (:mod:`.lm_task`) for NFE
summed over workers, the kinetic/Jacobian regularisers and ``--node-failure-policy skip``.
"""

from __future__ import annotations


import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS, TransformerLanguageModel, TransformerLanguageModelConfig, base_lm_architecture,
)

from ..nn.factory import configure_ode_layers, decoder_layer, layer_spec
from ..nn.layers import is_ode_layer
from ..nn.options import FAIRSEQ_LM, NodeOptions
from ..ode import OptionError
from . import options
from .model import FairseqNodeDecoderLayer, NodeTransformerDecoder, NodeTransformerModel
from .nfe_logging import BackwardNFELogger, count_generation_nfe

#: The LM task that adds regularisers and skips failed batches (node_seq.fairseq.lm_task).
NODE_LM_TASK = "node_language_modeling"

#: fairseq LM options that would replace what the NODE layers or the HF model implement.
_UNSUPPORTED = ("character_embeddings", "adaptive_input", "decoder_layers_to_keep")


class NodeTransformerLMDecoder(NodeTransformerDecoder):
    """The seq2seq model's NODE decoder, its layers built without cross-attention."""

    beam = 1  # rows per sentence when generating: --beam, set by prepare_for_inference_

    def build_decoder_layer(self, cfg, no_encoder_attn: bool = True):
        node_options = self.node_options
        layer = decoder_layer(layer_spec(options.layer_sizes(self.args, "decoder"), "decoder"), node_options,
                              encoder_dim=None, layer_class=FairseqNodeDecoderLayer)
        layer.use_cache = node_options.incremental_cache or not node_options.decoder
        return layer

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        if self.generation_nfe is not None and incremental_state is not None and not incremental_state:
            # the first step of a batch opens it (the seq2seq model's encoder does)
            sentences = prev_output_tokens.shape[0] // self.beam
            self.generation_nfe.start_batch(torch.zeros(sentences, device=prev_output_tokens.device))
        return super().forward(prev_output_tokens, encoder_out=encoder_out, incremental_state=incremental_state,
                               **kwargs)


@register_model("node_transformer_lm")
class NodeTransformerLanguageModel(TransformerLanguageModel):
    """A decoder-only Transformer LM whose layers are ODE blocks (node-seq)."""

    def __init__(self, decoder: NodeTransformerLMDecoder):
        super().__init__(decoder)
        self._backward_nfe = BackwardNFELogger(self)
        self._fallbacks_logged = 0
        self.nfe_logged_by_task = False  # --task node_language_modeling logs NFE summed over workers
        self.regularizer_weights = configure_ode_layers(self, decoder.node_options)

    @staticmethod
    def add_args(parser):
        # fairseq's LM options (as --arch transformer_lm has them), then the NODE options that apply to an LM
        gen_parser_from_dataclass(parser, TransformerLanguageModelConfig(), delete_default=True)
        options.add_node_args(parser, FAIRSEQ_LM)

    @classmethod
    def build_model(cls, args, task):
        node_options = node_lm_base_architecture(args)
        if getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = getattr(args, "tokens_per_sample", DEFAULT_MAX_TARGET_POSITIONS)
        embed_tokens = cls.build_embedding(args, task.source_dictionary, args.decoder_input_dim)
        return cls(NodeTransformerLMDecoder(args, task.target_dictionary, embed_tokens, node_options,
                                            no_encoder_attn=True))

    def prepare_for_inference_(self, cfg):
        """fairseq-generate, fairseq-interactive and fairseq-eval-lm call this before decoding: from here
        on the decoder counts NFE per sentence for generate's ``NODE NFE`` line."""
        super().prepare_for_inference_(cfg)
        self.decoder.generation_nfe = count_generation_nfe()
        self.decoder.beam = getattr(cfg.generation, "beam", 1)  # fairseq tells a decoder no beam size

    def forward(self, src_tokens, **kwargs):
        inputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
                 for layer in self.ode_layers()]
        try:
            out = super().forward(src_tokens, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if not self.nfe_logged_by_task:
            self._log_own_counts(inputs)
        return out

    _log_own_counts = NodeTransformerModel._log_own_counts  # NFE, fallbacks and backward NFE, as seq2seq logs them

    def ode_layers(self):
        return [layer for layer in self.decoder.layers if is_ode_layer(layer)]


def _validated(args) -> NodeOptions:
    try:
        for name in _UNSUPPORTED:
            if getattr(args, name, None):
                raise OptionError(f"--{name.replace('_', '-')}: not supported by node_transformer_lm (its layers "
                                  "and the HF model use plain token embeddings and all decoder layers)")
        return options.validate(args, front_end=FAIRSEQ_LM, sides=("decoder",), node_task=NODE_LM_TASK)
    except OptionError as error:
        raise SystemExit(f"node_transformer_lm: error: {error}") from None


@register_model_architecture("node_transformer_lm", "node_transformer_lm")
def node_lm_base_architecture(args) -> NodeOptions:
    """fairseq's ``transformer_lm`` defaults (512 wide, 6 layers), pre-norm layers, the NODE defaults;
    returns the NODE options, validated (as :func:`~.model.node_base_architecture`)."""
    options.fill_defaults(args, FAIRSEQ_LM)
    base_lm_architecture(args)  # sets pre-norm layers: the branch, not the normalised sum, is the vector field
    args.decoder_normalize_before = True
    return _validated(args)


@register_model_architecture("node_transformer_lm", "node_transformer_lm_tiny")
def node_transformer_lm_tiny(args):
    """A CPU-sized LM: 2 layers, width 64 (tests, the language-model guide's example, the Multi30k comparison)."""
    options.default_sizes(args, ("decoder",), dim=64, ffn=128, heads=4, layers=2)
    node_lm_base_architecture(args)


@register_model_architecture("node_transformer_lm", "node_transformer_lm_small")
def node_transformer_lm_small(args):
    """3 layers, width 256 (the seq2seq Multi30k recipe's width)."""
    options.default_sizes(args, ("decoder",), dim=256, ffn=1024, heads=4, layers=3)
    node_lm_base_architecture(args)


@register_model_architecture("node_transformer_lm", "node_transformer_lm_gpt2_small")
def node_transformer_lm_gpt2_small(args):
    """The sizes of fairseq's ``transformer_lm_gpt2_small`` (1024 wide, 4096 FFN, 16 heads, 24 layers, GELU)."""
    options.default_sizes(args, ("decoder",), dim=1024, ffn=4096, heads=16, layers=24, activation="gelu")
    node_lm_base_architecture(args)
