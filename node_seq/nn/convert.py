"""Map the weights of fairseq's own Transformer layers onto node-seq layers.

A pre-norm fairseq layer is one unit Euler step of the matching NODE layer, so a trained
Transformer can initialise a NODE-Transformer (and the tests prove the equivalence with it).
"""

from __future__ import annotations

_SUBMODULES = {
    "self_attn.": "field.self_attn.",
    "self_attn_layer_norm.": "field.self_attn_layer_norm.",
    "encoder_attn.": "field.encoder_attn.",
    "encoder_attn_layer_norm.": "field.encoder_attn_layer_norm.",
    "fc1.": "field.ffn.fc1.",
    "fc2.": "field.ffn.fc2.",
    "final_layer_norm.": "field.ffn.final_layer_norm.",
}


def from_fairseq_layer(state_dict: dict) -> dict:
    """Rename a ``fairseq.modules.Transformer{Encoder,Decoder}Layer`` state dict for our layers."""
    renamed = {}
    for key, value in state_dict.items():
        prefix = next((p for p in _SUBMODULES if key.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"no node-seq counterpart for fairseq layer parameter {key!r}")
        renamed[_SUBMODULES[prefix] + key[len(prefix):]] = value
    return renamed
