"""``NodeTransformerLMConfig``: the HF configuration of a NODE-Transformer language model
(model type ``node_transformer_lm``, fairseq's ``--arch node_transformer_lm``).

Field names follow the fairseq LM's options (``--decoder-embed-dim`` is ``decoder_embed_dim``,
``--node-method`` is ``node_method``); the ``node_*`` fields are the schema's LM options
(:data:`~node_seq.nn.options.HF_LM`: every NODE option but the encoder's). Every field is checked
when the config is built or loaded; an invalid value raises :class:`~node_seq.ode.OptionError`
naming the field and what it accepts.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..nn.options import HF_LM
from .configuration_common import node_option_fields

NodeLMOptionFields = node_option_fields(HF_LM, "NodeLMOptionFields")


@strict
class NodeTransformerLMConfig(NodeLMOptionFields):
    """Sizes, vocabulary, special tokens and ODE options of a decoder-only NODE-Transformer.

    The defaults are fairseq's ``node_transformer_lm_tiny`` (pre-norm layers, sinusoidal positions,
    scaled embeddings, ``dopri5``) with the output projection tied to the embeddings. fairseq's
    dictionary gives the special ids (``<s>=0 <pad>=1 </s>=2 <unk>=3``); a fairseq LM reads every
    sentence after ``</s>``, so ``</s>`` is also the first token (``bos_token_id``).

    ``use_cache`` defaults to ``True`` unless the layers are adaptive ODEs (an adaptive layer given
    a cache re-solves its prefix: exact, and no cheaper).
    """

    model_type = "node_transformer_lm"
    keys_to_ignore_at_inference = ["cache"]
    # FSDP2: one group per ODE layer, the rest (tied embedding and lm_head) in the root group
    # (see NodeTransformerConfig).
    base_model_fsdp_plan = {"decoder.layers.*": "free_full_weight"}
    attribute_map = {
        "hidden_size": "decoder_embed_dim",
        "num_attention_heads": "decoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    vocab_size: int = 128
    decoder_embed_dim: int = 64
    decoder_ffn_dim: int = 128
    decoder_layers: int = 2
    decoder_attention_heads: int = 4
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    tie_word_embeddings: bool = True

    use_cache: bool | None = None
    is_encoder_decoder: bool = False
    bos_token_id: int | None = 2
    pad_token_id: int | None = 1
    eos_token_id: int | None = 2
    unk_token_id: int | None = 3

    _size_fields = ("vocab_size", "decoder_embed_dim", "decoder_ffn_dim", "decoder_layers",
                    "decoder_attention_heads", "max_position_embeddings")
    _sides = ("decoder",)


__all__ = ["NodeTransformerLMConfig"]
