"""HF Transformers classes of the NODE-Transformer LM: the same model as fairseq's ``--arch node_transformer_lm``.

The decoder stack is the seq2seq model's (:class:`~node_seq.hf.modeling_node_transformer.NodeTransformerDecoder`:
scaled embeddings, fairseq's sinusoidal positions over non-padding tokens, the layers, a final
LayerNorm) built without cross-attention, and so is the per-stage :class:`NodeCache`: cached and
uncached decoding are equal, in every ``generate`` mode. Prompts may be left-padded (positions
skip padding, as fairseq numbers them).

Read top to bottom: the base class, the decoder-only model (``AutoModel``), the LM head
(``AutoModelForCausalLM``). Shapes are batch-first: ``(batch, length, channels)``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_node_transformer_lm import NodeTransformerLMConfig
from .modeling_node_transformer import (
    NodeHeadMixin, NodeNFE, NodeTransformerDecoder, NodeTransformerPreTrainedModel, _one_of, node_cache_for,
    resolve_output_flags,
)


class NodeTransformerLMPreTrainedModel(NodeTransformerPreTrainedModel):
    """The seq2seq base class (fairseq's init of every module, ``from_pretrained(..., strict=True)``) for the LM config."""

    config: NodeTransformerLMConfig
    config_class = NodeTransformerLMConfig
    _no_split_modules = ["NodeDecoderLayer"]


class NodeTransformerLMModel(NodeTransformerLMPreTrainedModel):
    """The decoder stack without the output projection (``AutoModel``)."""

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: NodeTransformerLMConfig):
        config.check()  # also catches fields changed after the config was made
        super().__init__(config)
        embed_tokens = nn.Embedding(config.vocab_size, config.decoder_embed_dim, config.pad_token_id)
        self.decoder = NodeTransformerDecoder(config, embed_tokens, cross_attention=False)
        self.last_nfe = NodeNFE()
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.decoder.embed_tokens = value

    def get_decoder(self) -> NodeTransformerDecoder:
        return self.decoder

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: Cache | None = None, inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None) -> BaseModelOutputWithPast:
        """Decode ``input_ids`` (or ``inputs_embeds``, what ``get_input_embeddings()`` returns for them).

        ``attention_mask`` (batch, length) marks padding with 0; with a cache it covers the cached
        positions too, as ``generate`` passes it. A :class:`NodeCache` is kept outside training when
        ``use_cache`` (the config's unless given); decoding then continues after its positions.
        """
        config = self.config
        output_hidden_states, return_dict = resolve_output_flags(config, output_attentions, output_hidden_states,
                                                                 return_dict)
        _one_of(input_ids, inputs_embeds, "input_ids", "inputs_embeds")
        use_cache = (config.use_cache if use_cache is None else use_cache) and not self.training
        node_cache = node_cache_for(cache, config.decoder_layers) if use_cache else None
        hidden, states = self.decoder(input_ids, None, None, attention_mask, node_cache, inputs_embeds=inputs_embeds,
                                      output_hidden_states=output_hidden_states)
        self.last_nfe = NodeNFE(decoder=self.decoder.last_stats, decoder_passes=1, sequences=hidden.shape[0])
        out = BaseModelOutputWithPast(last_hidden_state=hidden, cache=node_cache, hidden_states=states)
        return out if return_dict else out.to_tuple()


class NodeTransformerForCausalLM(NodeHeadMixin, NodeTransformerLMPreTrainedModel, GenerationMixin):
    """The LM with its output projection: next-token loss, ``generate`` (every mode), NFE counts.

    ``last_nfe`` after a forward pass; ``generation_nfe`` after ``generate``: the NFE each sequence
    of the batch went through (the prompt's solve plus every decoding step's).
    """

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: NodeTransformerLMConfig):
        super().__init__(config)
        self.model = NodeTransformerLMModel(config)
        self.lm_head = nn.Linear(config.decoder_embed_dim, config.vocab_size, bias=False)
        self._init_head(config)

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: Cache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None,
                num_items_in_batch: torch.Tensor | int | None = None) -> CausalLMOutputWithPast:
        """:meth:`NodeTransformerLMModel.forward`, then logits, and with ``labels`` the loss.

        ``labels`` are aligned with the inputs (``labels = input_ids``, -100 where not scored): the
        logits at position i are scored against ``labels[i + 1]``. The loss is their mean
        cross-entropy (with ``num_items_in_batch``, ``Trainer``'s count of the update's scored tokens:
        their sum divided by it), plus each regulariser's weight times its value while training. A
        padding position predicts nothing: left-padded, a row's first token would otherwise be scored
        from the padding before it (whose attention is all masked), and the loss would depend on padding.
        """
        if labels is not None:
            use_cache = False
        outputs = self.model(input_ids, attention_mask, cache, inputs_embeds, use_cache, output_attentions,
                             output_hidden_states, return_dict=True)
        logits = self.lm_head(outputs.last_hidden_state)  # (batch, length, vocab)
        loss = None
        if labels is not None:
            targets = labels[:, 1:]
            if attention_mask is not None and attention_mask.shape == labels.shape:
                targets = targets.masked_fill(attention_mask[:, :-1] == 0, -100)
            loss = self._loss(logits[:, :-1], targets, num_items_in_batch)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                     hidden_states=outputs.hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return out if return_dict else out.to_tuple()


__all__ = ["NodeTransformerForCausalLM", "NodeTransformerLMModel", "NodeTransformerLMPreTrainedModel"]
