"""``NodeTransformerConfig``: the HF configuration of a NODE-Transformer (model type ``node_transformer``).

Field names follow the fairseq model's options one to one (``--node-method`` is ``node_method``,
``--encoder-embed-dim`` is ``encoder_embed_dim``), so a converted checkpoint's config reads like the
command that trained it. Every field is checked when the config is built (and so when it is loaded
from ``config.json``); an invalid value raises :class:`~node_seq.ode.OptionError` naming the field
and what it accepts.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from ..nn.options import HF
from .configuration_common import fail, node_option_fields

NodeOptionFields = node_option_fields(HF, "NodeOptionFields")


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

    ``share_all_embeddings`` makes one input embedding for both sides (one vocabulary, one width);
    ``tie_word_embeddings`` decides the output projection alone: tied to the target embedding, or
    its own ``lm_head.weight`` (fairseq's ``--share-all-embeddings`` sets both, and so does the converter).

    ``use_cache`` defaults to ``True`` unless the decoder is an adaptive ODE: the per-stage cache
    needs a fixed grid (an adaptive decoder given a cache re-solves its prefix, which is exact but
    saves nothing).
    """

    model_type = "node_transformer"
    keys_to_ignore_at_inference = ["cache"]
    # FSDP2 (``from_pretrained(distributed_config=...)``): one group per ODE layer, gathered once per
    # solve however often its field is called; embeddings, final norms and lm_head (tied or not) in
    # the root group, so a weight shared by several of them is never split between groups.
    base_model_fsdp_plan = {"encoder.layers.*": "free_full_weight", "decoder.layers.*": "free_full_weight"}
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

    _size_fields = ("vocab_size", "decoder_vocab_size", "encoder_embed_dim", "encoder_ffn_dim", "encoder_layers",
                    "encoder_attention_heads", "decoder_embed_dim", "decoder_ffn_dim", "decoder_layers",
                    "decoder_attention_heads", "max_position_embeddings")
    _sides = ("encoder", "decoder")
    _token_id_fields = ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "decoder_start_token_id")

    def __post_init__(self, **kwargs):
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        super().__post_init__(**kwargs)

    def _check_vocabularies(self) -> None:
        if self.share_all_embeddings:
            if self.vocab_size != self.decoder_vocab_size:
                fail("share_all_embeddings", f"needs one vocabulary, got vocab_size {self.vocab_size} and "
                     f"decoder_vocab_size {self.decoder_vocab_size}; use share_all_embeddings=False")
            if self.encoder_embed_dim != self.decoder_embed_dim:
                fail("share_all_embeddings", f"needs encoder_embed_dim == decoder_embed_dim, got "
                     f"{self.encoder_embed_dim} and {self.decoder_embed_dim}")

    def _token_id_bound(self) -> tuple[str, int]:
        """The smaller vocabulary: special ids mean the same on both sides."""
        if self.decoder_vocab_size < self.vocab_size:
            return "decoder_vocab_size", self.decoder_vocab_size
        return "vocab_size", self.vocab_size


__all__ = ["NodeTransformerConfig"]
