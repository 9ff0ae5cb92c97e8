"""NODE-Transformer building blocks in plain torch, shared by the fairseq and HF front ends."""

from .attention import MultiheadAttention as MultiheadAttention, attention_bias as attention_bias
from .dropout import FrozenDropout as FrozenDropout
from .layers import (
    is_ode_layer as is_ode_layer,
    LayerSpec as LayerSpec,
    NodeDecoderLayer as NodeDecoderLayer,
    NodeEncoderLayer as NodeEncoderLayer,
    collect_stats as collect_stats,
    reorder_cache as reorder_cache,
)
from .options import NodeOptions as NodeOptions
