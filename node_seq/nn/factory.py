"""From :class:`~node_seq.nn.options.NodeOptions` to layers: the one place that decides what an
ODE layer is (solver, augmentation, time dependence) and what a plain layer is (none of them)."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .layers import LayerSpec, NodeDecoderLayer, NodeEncoderLayer, enable_regularizers, is_ode_layer
from .options import NodeOptions


def layer_spec(sizes: Mapping[str, Any], side: str) -> LayerSpec:
    """A side's sizes from a front end's values, given in node-seq's names: ``{side}_embed_dim``,
    ``{side}_attention_heads``, ``{side}_ffn_dim``, ``dropout``, ``attention_dropout``,
    ``activation_dropout``, ``activation``."""
    return LayerSpec(embed_dim=sizes[f"{side}_embed_dim"], num_heads=sizes[f"{side}_attention_heads"],
                     ffn_dim=sizes[f"{side}_ffn_dim"], dropout=sizes["dropout"],
                     attention_dropout=sizes["attention_dropout"], activation_dropout=sizes["activation_dropout"],
                     activation=sizes["activation"])


def encoder_layer(spec: LayerSpec, options: NodeOptions, layer_class: type = NodeEncoderLayer) -> NodeEncoderLayer:
    """An ODE encoder layer if ``options.encoder``, else the plain layer of the same modules (pre- or
    post-norm, ``options.plain_norm``)."""
    if not options.encoder:
        return layer_class(spec, None, post_norm=options.plain_norm == "post")
    return layer_class(spec, options.solver(), augment_dims=options.augment_dims,
                       time_dependent=options.time_dependent)


def decoder_layer(spec: LayerSpec, options: NodeOptions, *, encoder_dim: int | None,
                  layer_class: type = NodeDecoderLayer) -> NodeDecoderLayer:
    """An ODE decoder layer if ``options.decoder``, else the plain layer of the same modules (pre- or
    post-norm, ``options.plain_norm``); ``encoder_dim=None``: no cross-attention (a decoder-only
    language model's layer)."""
    cross = dict(encoder_dim=encoder_dim, cross_attention=encoder_dim is not None)
    if not options.decoder:
        return layer_class(spec, None, post_norm=options.plain_norm == "post", **cross)
    return layer_class(spec, options.solver(), augment_dims=options.augment_dims,
                       time_dependent=options.time_dependent, separated=options.separated_decoder, **cross)


def configure_ode_layers(model: nn.Module, options: NodeOptions) -> dict[str, float]:
    """Name every ODE layer by its module path (errors say ``encoder.layers.2``), give it the
    failure policy, and switch on the regularisers with a weight > 0; return those weights by name
    for the front end that adds them to its loss."""
    policy = options.failure()
    for name, module in model.named_modules():
        if is_ode_layer(module):
            module.layer_name, module.failure = name, policy
    return enable_regularizers(model, kinetic=options.kinetic_weight, jacobian=options.jacobian_weight)
