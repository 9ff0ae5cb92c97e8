"""``NodeTransformerConfig``: the HF configuration of a NODE-Transformer (model type ``node_transformer``).

Field names follow the fairseq model's options one to one (``--node-method`` is ``node_method``,
``--encoder-embed-dim`` is ``encoder_embed_dim``), so a converted checkpoint's config reads like the
command that trained it. Every field is checked when the config is built (and so when it is loaded
from ``config.json``); an invalid value raises :class:`~node_seq.ode.OptionError` naming the field
and what it accepts.
"""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..ode import OptionError, SolverConfig, parse_time_points

#: How each :class:`~node_seq.ode.SolverConfig` field is spelled in this config.
OPTION_NAMES = {
    "method": "node_method", "steps": "node_steps", "step_size": "node_step_size", "rtol": "node_rtol",
    "atol": "node_atol", "gradient": "node_gradient", "adjoint_rtol": "node_adjoint_rtol",
    "adjoint_atol": "node_adjoint_atol", "seminorm": "node_seminorm", "max_num_steps": "node_max_num_steps",
    "checkpoint_snapshots": "node_checkpoint_snapshots",
    "t0": "node_ts", "t1": "node_ts",
}
ACTIVATIONS = ("relu", "gelu", "tanh", "silu")


def _fail(field: str, message: str) -> None:
    raise OptionError(f"{field}: {message}")


@strict
class NodeTransformerConfig(PreTrainedConfig):
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

    node_encoder: bool = True
    node_decoder: bool = True
    node_method: str = "dopri5"
    node_steps: int | None = None
    node_step_size: float | int | None = None
    node_rtol: float | int = 1e-3
    node_atol: float | int = 1e-4
    node_ts: list | tuple | str = (0.0, 1.0)
    node_gradient: str = "backprop"
    node_adjoint_rtol: float | int | None = None
    node_adjoint_atol: float | int | None = None
    node_seminorm: bool = False
    node_checkpoint_snapshots: int | None = None  # with node_gradient "checkpoint": states stored per solve
    node_max_num_steps: int = 1000
    node_augment_dims: int = 0
    node_time_dependent: bool = False
    node_separated_decoder: bool = False
    node_kinetic_weight: float | int = 0.0  # training loss + weight x kinetic energy of the ODE blocks
    node_jacobian_weight: float | int = 0.0  # training loss + weight x Jacobian Frobenius norm (Hutchinson)

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
            self.use_cache = not self.node_decoder or self.solver_config().is_fixed_grid
        super().__post_init__(**kwargs)
        self.check()

    def save_pretrained(self, *args, **kwargs):
        """Refuse to write a config that would not load back (a field may have changed since ``__init__``)."""
        self.check()
        return super().save_pretrained(*args, **kwargs)

    def solver_config(self) -> SolverConfig:
        """The solver of every ODE block, validated (errors name this config's fields)."""
        t0, t1 = self.node_ts
        return SolverConfig(
            method=self.node_method, steps=self.node_steps, step_size=self.node_step_size, rtol=self.node_rtol,
            atol=self.node_atol, gradient=self.node_gradient, adjoint_rtol=self.node_adjoint_rtol,
            adjoint_atol=self.node_adjoint_atol, seminorm=self.node_seminorm,
            checkpoint_snapshots=self.node_checkpoint_snapshots, max_num_steps=self.node_max_num_steps, t0=t0, t1=t1,
        ).validate(OPTION_NAMES)

    def check(self) -> None:
        """Raise :class:`~node_seq.ode.OptionError` for the first invalid field."""
        self.solver_config()
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
        if isinstance(self.node_augment_dims, bool) or self.node_augment_dims < 0:
            _fail("node_augment_dims", f"must be an integer >= 0, got {self.node_augment_dims!r}")
        for side in ("encoder", "decoder"):
            dim, heads = getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads")
            extra = self.node_augment_dims if getattr(self, f"node_{side}") else 0
            if (dim + extra) % heads:
                if extra:
                    allowed = [n for n in range(0, 4 * heads) if (dim + n) % heads == 0][:4]
                    _fail("node_augment_dims", f"{side} width {dim} + {extra} augmented dims is not divisible by "
                          f"{side}_attention_heads {heads}; use a value such as {', '.join(map(str, allowed))}")
                _fail(f"{side}_attention_heads", f"must divide {side}_embed_dim {dim}, got {heads}")
        if self.node_separated_decoder and not self.node_decoder:
            _fail("node_separated_decoder", "needs node_decoder=True (the decoder is not an ODE)")
        for field in ("node_kinetic_weight", "node_jacobian_weight"):
            weight = getattr(self, field)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight) and weight >= 0):
                _fail(field, f"must be a finite number >= 0, got {weight!r}")
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


__all__ = ["NodeTransformerConfig", "OPTION_NAMES"]
