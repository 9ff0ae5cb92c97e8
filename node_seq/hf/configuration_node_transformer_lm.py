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

from ..nn.options import HF_LM, NodeOptions
from ..ode import SolverConfig, parse_time_points
from .configuration_node_transformer import ACTIVATIONS, _fail, node_option_fields

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

    def __post_init__(self, **kwargs):
        unknown = sorted(name for name in kwargs if name.startswith("node_"))
        if unknown:  # PreTrainedConfig would keep it as an attribute that nothing reads
            fields = sorted(name for name in self.__dataclass_fields__ if name.startswith("node_"))
            _fail(unknown[0], f"not an option of {self.model_type} (a decoder-only model); its NODE fields are "
                  f"{', '.join(fields)}")
        self.node_ts = list(parse_time_points(self.node_ts, "node_ts"))
        if self.use_cache is None:
            self.use_cache = not self.node_decoder or self.node_options().solver().is_fixed_grid
        super().__post_init__(**kwargs)
        self.check()

    def save_pretrained(self, *args, **kwargs):
        """Refuse to write a config that would not load back (a field may have changed since ``__init__``)."""
        self.check()
        return super().save_pretrained(*args, **kwargs)

    def node_options(self) -> NodeOptions:
        """The NODE options of this config, checked (errors name this config's fields)."""
        return NodeOptions.from_front_end(self, HF_LM)

    def solver_config(self) -> SolverConfig:
        return self.node_options().solver()

    def check(self) -> None:
        """Raise :class:`~node_seq.ode.OptionError` for the first invalid field."""
        options = self.node_options()
        for field in ("vocab_size", "decoder_embed_dim", "decoder_ffn_dim", "decoder_layers",
                      "decoder_attention_heads", "max_position_embeddings"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(field, f"must be an integer >= 1, got {value!r}")
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                _fail(field, f"must be a probability in [0, 1), got {getattr(self, field)!r}")
        if self.activation_function not in ACTIVATIONS:
            _fail("activation_function", f"unknown activation {self.activation_function!r}; "
                  f"choose one of {', '.join(ACTIVATIONS)}")
        dim, heads = self.decoder_embed_dim, self.decoder_attention_heads
        options.check_width("decoder", dim, heads, "decoder_attention_heads", HF_LM)
        if dim % heads and not (options.augment_dims and options.decoder):
            _fail("decoder_attention_heads", f"must divide decoder_embed_dim {dim}, got {heads}")
        for field in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < self.vocab_size:
                _fail(field, f"must be a token id in [0, vocab_size={self.vocab_size}), got {value!r}")
        if self.pad_token_id is None:
            _fail("pad_token_id", "is required (padding positions are masked and excluded from positions)")


__all__ = ["NodeTransformerLMConfig"]
