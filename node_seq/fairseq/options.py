"""The ``--node-*`` command-line options, and how they become a solver config.

Single-option checks (choices, types) are argparse's, so a bad value fails with argparse's usual
``error: argument --node-method: invalid choice ...``. Checks that involve several options run in
the architecture function, which fairseq applies while parsing, i.e. before any directory,
checkpoint or data is touched.
"""

from __future__ import annotations

import argparse
import math

from ..nn.layers import FAILURE_POLICIES, FailurePolicy
from ..ode import FIXED_GRID_METHODS, GRADIENTS, METHODS, OptionError, SolverConfig, parse_time_points

#: How each SolverConfig field is spelled on the fairseq command line.
OPTION_NAMES = {
    "method": "--node-method", "steps": "--node-steps", "step_size": "--node-step-size",
    "rtol": "--node-rtol", "atol": "--node-atol", "gradient": "--node-gradient",
    "adjoint_rtol": "--node-adjoint-rtol", "adjoint_atol": "--node-adjoint-atol",
    "seminorm": "--node-seminorm", "checkpoint_snapshots": "--node-checkpoint-snapshots",
    "max_num_steps": "--node-max-num-steps", "t0": "--node-ts", "t1": "--node-ts",
}

DEFAULTS = dict(
    node_encoder=True, node_decoder=True, node_method="dopri5", node_steps=None, node_step_size=None,
    node_rtol=1e-3, node_atol=1e-4, node_ts="0,1", node_gradient="backprop", node_adjoint_rtol=None,
    node_adjoint_atol=None, node_seminorm=False, node_checkpoint_snapshots=None, node_max_num_steps=1000, node_augment_dims=0,
    node_time_dependent=False, node_separated_decoder=False, node_incremental_cache=True,
    node_failure_policy="raise", node_fallback_method="rk4", node_fallback_steps=4, node_kinetic_weight=0.0,
    node_jacobian_weight=0.0,
)


def add_node_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NODE-Transformer (node-seq)")
    add = group.add_argument
    add("--node-encoder", action=argparse.BooleanOptionalAction, default=DEFAULTS["node_encoder"],
        help="encoder layers are ODE blocks (--no-node-encoder: plain pre-norm layers)")
    add("--node-decoder", action=argparse.BooleanOptionalAction, default=DEFAULTS["node_decoder"],
        help="decoder layers are ODE blocks (--no-node-decoder: plain pre-norm layers)")
    add("--node-method", choices=METHODS, default=DEFAULTS["node_method"],
        help="ODE solver: fixed grid (euler, midpoint, heun, rk4, reversible_heun) or adaptive")
    add("--node-steps", type=int, default=None, metavar="N",
        help="steps of a fixed-grid method over --node-ts (default 1)")
    add("--node-step-size", type=float, default=None, metavar="H",
        help="step size of a fixed-grid method (instead of --node-steps)")
    add("--node-rtol", type=float, default=DEFAULTS["node_rtol"], help="relative tolerance of adaptive methods")
    add("--node-atol", type=float, default=DEFAULTS["node_atol"], help="absolute tolerance of adaptive methods")
    add("--node-ts", type=str, default=DEFAULTS["node_ts"], metavar="T0,T1",
        help="integration interval of every ODE block")
    add("--node-gradient", choices=GRADIENTS, default=DEFAULTS["node_gradient"],
        help="how gradients are computed: backprop, checkpoint, adjoint or reversible")
    add("--node-adjoint-rtol", type=float, default=None, help="rtol of the adjoint's backward solve (default: --node-rtol)")
    add("--node-adjoint-atol", type=float, default=None, help="atol of the adjoint's backward solve (default: --node-atol)")
    add("--node-seminorm", action="store_true", default=DEFAULTS["node_seminorm"],
        help="adjoint error norm without the parameter channels (fewer backward steps)")
    add("--node-checkpoint-snapshots", type=int, default=None, metavar="S",
        help="with --node-gradient checkpoint: store at most S states per solve (binomial schedule, memory "
             "independent of the steps, steps recomputed a few times); default one state per step")
    add("--node-max-num-steps", type=int, default=DEFAULTS["node_max_num_steps"],
        help="adaptive steps allowed per solve before it fails")
    add("--node-augment-dims", type=int, default=DEFAULTS["node_augment_dims"], metavar="N",
        help="augmented NODE: N extra zero channels inside each ODE block")
    add("--node-time-dependent", action="store_true", default=DEFAULTS["node_time_dependent"],
        help="the vector field sees t")
    add("--node-separated-decoder", action="store_true", default=DEFAULTS["node_separated_decoder"],
        help="decoder self-attention outside the ODE, cross-attention + FFN inside")
    add("--node-incremental-cache", action=argparse.BooleanOptionalAction, default=DEFAULTS["node_incremental_cache"],
        help="fixed-grid decoders cache keys/values per solver stage while generating "
             "(--no-node-incremental-cache: recompute the prefix)")
    add("--node-failure-policy", choices=FAILURE_POLICIES, default=DEFAULTS["node_failure_policy"],
        help="when a solve fails (max steps, step underflow, inf/nan): raise an error naming the layer, "
             "fall back to a fixed grid for that solve (counted as node_fallbacks in the log), or skip the "
             "batch (counted as node_skipped; needs --task node_translation)")
    add("--node-fallback-method", choices=[m for m in FIXED_GRID_METHODS if m != "reversible_heun"],
        default=DEFAULTS["node_fallback_method"], help="fixed-grid method of --node-failure-policy fallback")
    add("--node-fallback-steps", type=int, default=DEFAULTS["node_fallback_steps"],
        help="steps of --node-failure-policy fallback")
    add("--node-kinetic-weight", type=float, default=DEFAULTS["node_kinetic_weight"], metavar="W",
        help="add W x the kinetic energy of every ODE block (integral of |f|^2 dt, per token) to the "
             "training loss, to steer adaptive solvers towards fewer steps; needs --task node_translation")
    add("--node-jacobian-weight", type=float, default=DEFAULTS["node_jacobian_weight"], metavar="W",
        help="add W x the Frobenius norm of every ODE block's Jacobian (integral over t, Hutchinson "
             "estimate, per token) to the training loss; needs --task node_translation")


def fill_defaults(args: argparse.Namespace) -> None:
    """Give a namespace (e.g. from an older checkpoint) every NODE option."""
    for name, value in DEFAULTS.items():
        if getattr(args, name, None) is None and value is not None:
            setattr(args, name, value)
        elif not hasattr(args, name):
            setattr(args, name, value)


def solver_config(args: argparse.Namespace) -> SolverConfig:
    t0, t1 = parse_time_points(args.node_ts, "--node-ts")
    config = SolverConfig(
        method=args.node_method, steps=args.node_steps, step_size=args.node_step_size,
        rtol=args.node_rtol, atol=args.node_atol, gradient=args.node_gradient,
        adjoint_rtol=args.node_adjoint_rtol, adjoint_atol=args.node_adjoint_atol, seminorm=args.node_seminorm,
        checkpoint_snapshots=args.node_checkpoint_snapshots, max_num_steps=args.node_max_num_steps, t0=t0, t1=t1,
    ).validate(OPTION_NAMES)
    return config.with_uniform_grid()


def validate(args: argparse.Namespace) -> SolverConfig:
    """Check every NODE option and how they combine; raise OptionError naming the option."""
    config = solver_config(args)
    if args.node_augment_dims < 0:
        raise OptionError(f"--node-augment-dims: must be an integer >= 0, got {args.node_augment_dims}")
    for side in ("encoder", "decoder"):
        if not getattr(args, f"node_{side}"):
            continue
        dim, heads = getattr(args, f"{side}_embed_dim"), getattr(args, f"{side}_attention_heads")
        if (dim + args.node_augment_dims) % heads:
            allowed = [n for n in range(0, 4 * heads) if (dim + n) % heads == 0][:4]
            raise OptionError(
                f"--node-augment-dims: {side} width {dim} + {args.node_augment_dims} augmented dims is not "
                f"divisible by --{side}-attention-heads {heads}; use a value such as "
                f"{', '.join(map(str, allowed))}")
    if args.node_fallback_steps < 1:
        raise OptionError(f"--node-fallback-steps: must be an integer >= 1, got {args.node_fallback_steps}")
    task = getattr(args, "task", None)
    for option in ("--node-kinetic-weight", "--node-jacobian-weight"):
        weight = getattr(args, option[2:].replace("-", "_"))
        if not (math.isfinite(weight) and weight >= 0):
            raise OptionError(f"{option}: must be a finite number >= 0, got {weight}")
        if weight > 0 and task is not None and task != "node_translation":
            raise OptionError(f"{option}: needs --task node_translation (the task adds the term to the loss), "
                              f"got --task {task}")
    if args.node_failure_policy == "skip" and task is not None and task != "node_translation":
        raise OptionError(f"--node-failure-policy skip: needs --task node_translation (the task skips the "
                          f"batch), got --task {task}")
    if args.node_separated_decoder and not args.node_decoder:
        raise OptionError("--node-separated-decoder: needs --node-decoder (the decoder is not an ODE)")
    return config


def failure_policy(args: argparse.Namespace) -> FailurePolicy:
    return FailurePolicy(args.node_failure_policy,
                         SolverConfig(method=args.node_fallback_method, steps=args.node_fallback_steps))


if __name__ == "__main__":
    # fairseq-train --help prints before it knows the architecture, so it never lists any model's
    # options (its own Transformer's included): this lists ours, with their defaults.
    help_parser = argparse.ArgumentParser(prog="fairseq-train ... --arch node_transformer",
                                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_node_args(help_parser)
    help_parser.print_help()
