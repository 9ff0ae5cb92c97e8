"""``NodeTransformerConfig``: the HF configuration of a NODE-Transformer (model type ``node_transformer``).

Field names follow the fairseq model's options one to one (``--node-method`` is ``node_method``,
``--encoder-embed-dim`` is ``encoder_embed_dim``), so a converted checkpoint's config reads like the
command that trained it. Every field is checked when the config is built (and so when it is loaded
from ``config.json``); an invalid value raises :class:`~node_seq.ode.OptionError` naming the field
and what it accepts.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..nn.options import HF, NodeOptions, hf_annotation, options_of
from ..ode import OptionError, SolverConfig, parse_time_points

ACTIVATIONS = ("relu", "gelu", "tanh", "silu")


def _fail(field: str, message: str) -> None:
    raise OptionError(f"{field}: {message}")


def node_option_fields(front_end: str = HF, name: str = "NodeOptionFields") -> type:
    """A config base class with one field per NODE option of ``front_end`` (``node_method``, ...),
    generated from :class:`~node_seq.nn.options.NodeOptions`, the options' one description."""
    options = list(options_of(front_end))
    namespace = {option.spelled(front_end): option.default for option in options}
    namespace["__annotations__"] = {option.spelled(front_end): hf_annotation(option) for option in options}
    namespace["__module__"] = __name__
    namespace["__doc__"] = node_option_fields.__doc__
    return type(name, (PreTrainedConfig,), namespace)


NodeOptionFields = node_option_fields()


@strict
class NodeTransformerConfig(NodeOptionFields):
    """Sizes, vocabulary, special tokens and ODE options of a NODE-Transformer.

    The defaults are fairseq's ``node_transformer`` defaults (pre-norm layers, sinusoidal
    positions, scaled embeddings, ``dopri5`` with ``rtol=1e-3``/``atol=1e-4``) at the sizes of
    ``node_transformer_tiny``; fairseq's dictionary layout gives the special token ids
    (``<s>=0 <pad>=1 </s>=2 <unk>=3``), and decoding starts from ``</s>`` as in fairseq.

    ``vocab_size`` is the source vocabulary (encoder embeddings, what ``resize_token_embeddings``
    resizes) and ``decoder_vocab_size`` the target one (decoder embeddings and ``lm_head``), as in
    Marian; left out (configs saved before it existed) it is ``vocab_size``, one vocabulary.

    ``use_cache`` defaults to ``True`` unless the decoder is an adaptive ODE: the per-stage cache
    needs a fixed grid (an adaptive decoder given a cache re-solves its prefix, which is exact but
    saves nothing).
    """

    model_type = "node_transformer"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "hidden_size": "decoder_embed_dim",
        "num_attention_heads": "decoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    vocab_size: int = 128
    decoder_vocab_size: int | None = None  # None: the same as vocab_size
    encoder_embed_dim: int = 64
    encoder_ffn_dim: int = 128
    encoder_layers: int = 2
    encoder_attention_heads: int = 4
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
    share_all_embeddings: bool = True
    tie_word_embeddings: bool = True

    use_cache: bool | None = None
    is_encoder_decoder: bool = True
    bos_token_id: int | None = 0
    pad_token_id: int | None = 1
    eos_token_id: int | None = 2
    unk_token_id: int | None = 3
    decoder_start_token_id: int | None = 2

    def __post_init__(self, **kwargs):
        self.node_ts = list(parse_time_points(self.node_ts, "node_ts"))
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
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
        return NodeOptions.from_front_end(self, HF)

    def solver_config(self) -> SolverConfig:
        """The solver of every ODE block, validated; a fixed grid's size is whole ``node_steps``."""
        return self.node_options().solver()

    def check(self) -> None:
        """Raise :class:`~node_seq.ode.OptionError` for the first invalid field."""
        options = self.node_options()
        for field in ("vocab_size", "decoder_vocab_size", "encoder_embed_dim", "encoder_ffn_dim", "encoder_layers",
                      "encoder_attention_heads", "decoder_embed_dim", "decoder_ffn_dim", "decoder_layers",
                      "decoder_attention_heads", "max_position_embeddings"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(field, f"must be an integer >= 1, got {value!r}")
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                _fail(field, f"must be a probability in [0, 1), got {value!r}")
        if self.activation_function not in ACTIVATIONS:
            _fail("activation_function", f"unknown activation {self.activation_function!r}; "
                  f"choose one of {', '.join(ACTIVATIONS)}")
        for side in ("encoder", "decoder"):
            dim, heads = getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads")
            options.check_width(side, dim, heads, f"{side}_attention_heads", HF)
            if dim % heads and not (options.augment_dims and getattr(options, side)):
                _fail(f"{side}_attention_heads", f"must divide {side}_embed_dim {dim}, got {heads}")
        if self.share_all_embeddings:
            if not self.tie_word_embeddings:
                _fail("share_all_embeddings", "shares the output projection too: it needs tie_word_embeddings=True")
            if self.vocab_size != self.decoder_vocab_size:
                _fail("share_all_embeddings", f"needs one vocabulary, got vocab_size {self.vocab_size} and "
                      f"decoder_vocab_size {self.decoder_vocab_size}; use share_all_embeddings=False")
            if self.encoder_embed_dim != self.decoder_embed_dim:
                _fail("share_all_embeddings", f"needs encoder_embed_dim == decoder_embed_dim, got "
                      f"{self.encoder_embed_dim} and {self.decoder_embed_dim}")
        smallest = min(self.vocab_size, self.decoder_vocab_size)  # special ids mean the same on both sides
        for field in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "decoder_start_token_id"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < smallest:
                size = "vocab_size" if smallest == self.vocab_size else "decoder_vocab_size"
                _fail(field, f"must be a token id in [0, {size}={smallest}), got {value!r}")
        if self.pad_token_id is None:
            _fail("pad_token_id", "is required (padding positions are masked and excluded from positions)")


__all__ = ["NodeTransformerConfig"]
