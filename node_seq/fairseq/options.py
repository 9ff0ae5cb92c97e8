"""The ``--node-*`` command-line options: :mod:`node_seq.nn.options` as fairseq flags.

Single-option checks (choices, types) are argparse's, so a bad value fails with argparse's usual
``error: argument --node-method: invalid choice ...``. Checks that involve several options run in
the architecture function, which fairseq applies while parsing, i.e. before any directory,
checkpoint or data is touched.
"""

from __future__ import annotations

import argparse
import importlib.util

from ..nn.options import FAIRSEQ, NodeOptions, add_arguments, fill_missing
from ..ode import OptionError


def add_node_args(parser: argparse.ArgumentParser, front_end: str = FAIRSEQ) -> None:
    """fairseq hands models an argument group of its own; a plain parser (``--help`` below) gets one.
    ``front_end``: ``FAIRSEQ_LM`` for the language model (no ``--node-encoder``)."""
    is_group = not isinstance(parser, argparse.ArgumentParser)
    add_arguments(parser if is_group else parser.add_argument_group("NODE-Transformer (node-seq)"), front_end)


def fill_defaults(args: argparse.Namespace, front_end: str = FAIRSEQ) -> None:
    """Give a namespace (e.g. from an older checkpoint) every NODE option."""
    fill_missing(args, front_end, lambda name, value: setattr(args, name, value))


def layer_sizes(args: argparse.Namespace, side: str) -> dict:
    """One side's sizes in node_seq.nn's names (see :func:`node_seq.nn.factory.layer_spec`)."""
    return {
        f"{side}_embed_dim": getattr(args, f"{side}_embed_dim"),
        f"{side}_attention_heads": getattr(args, f"{side}_attention_heads"),
        f"{side}_ffn_dim": getattr(args, f"{side}_ffn_embed_dim"),
        "dropout": args.dropout, "attention_dropout": args.attention_dropout,
        "activation_dropout": getattr(args, "activation_dropout", 0.0) or getattr(args, "relu_dropout", 0.0) or 0.0,
        "activation": getattr(args, "activation_fn", "relu"),
    }


def default_sizes(args: argparse.Namespace, sides: tuple[str, ...], *, dim: int, ffn: int, heads: int, layers: int,
                  activation: str | None = None) -> None:
    """A named architecture's sizes for ``sides``, where the command line did not give them."""
    for side in sides:
        for name, value in (("embed_dim", dim), ("ffn_embed_dim", ffn), ("attention_heads", heads), ("layers", layers)):
            setattr(args, f"{side}_{name}", getattr(args, f"{side}_{name}", None) or value)
    if activation is not None:
        args.activation_fn = getattr(args, "activation_fn", None) or activation


def validate(args: argparse.Namespace, *, front_end: str = FAIRSEQ, sides: tuple[str, ...] = ("encoder", "decoder"),
             node_task: str = "node_translation") -> NodeOptions:
    """Check every NODE option and how they combine with fairseq's; raise OptionError naming the flag.

    The language model passes its own front end, its one side and its task (``node_language_modeling``)."""
    options = NodeOptions.from_front_end(args, front_end)
    for side in sides:
        options.check_width(side, getattr(args, f"{side}_embed_dim"), getattr(args, f"{side}_attention_heads"),
                            f"--{side}-attention-heads", FAIRSEQ)
    task = getattr(args, "task", None)
    for flag, weight in (("--node-kinetic-weight", options.kinetic_weight),
                         ("--node-jacobian-weight", options.jacobian_weight)):
        if weight > 0 and task is not None and task != node_task:
            raise OptionError(f"{flag}: needs --task {node_task} (the task adds the term to the loss), "
                              f"got --task {task}")
    if (getattr(args, "bf16", False) or getattr(args, "memory_efficient_bf16", False)) \
            and importlib.util.find_spec("torch_xla") is None:
        # fairseq's own error comes later and says nothing of --bf16 (AttributeError: 'NoneType' object has no
        # attribute 'xla_device', from Trainer.__init__ once the model is built)
        raise OptionError("--bf16: fairseq's --bf16 trains on a TPU (fairseq/options.py: it implies --tpu, which needs "
                          "torch_xla, not installed here); on a GPU use --amp (float16 autocast), and for bfloat16 "
                          "mixed precision on a CPU or GPU the HF trainer's --bf16 (node-seq-train-hf)")
    if options.failure_policy == "skip" and task is not None and task != node_task:
        raise OptionError(f"--node-failure-policy skip: needs --task {node_task} (the task skips the "
                          f"batch), got --task {task}")
    return options


if __name__ == "__main__":
    # fairseq-train --help prints before it knows the architecture, so it never lists any model's
    # options (its own Transformer's included): this lists ours, with their defaults.
    help_parser = argparse.ArgumentParser(prog="fairseq-train ... --arch node_transformer",
                                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_node_args(help_parser)
    help_parser.print_help()
