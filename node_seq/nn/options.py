"""The NODE options: one declarative description that every front end derives its own from.

Each option is a field of :class:`NodeOptions`: its type, default, allowed values, help, and the
front ends that expose it. fairseq's ``--node-*`` flags, the HF config's ``node_*`` fields,
``node-seq-train-hf``'s flags and the vision config's solver keys are all generated from this
class, and :meth:`NodeOptions.check` is the one validation; its errors name the option the way the
user's front end spells it. Adding an option is one field here (plus its rule in ``check`` when
it has one beyond its type and choices).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..ode import (
    ADAPTIVE_METHODS, DEFAULT_FALLBACK, DEFAULT_SOLVER, FALLBACK_METHODS, FIXED_GRID_METHODS, GRADIENTS, LEARNED_METHODS,
    METHODS, REGISTRY, OptionError, SolverConfig, parse_time_points,
)
from ..ode.config import STEP_CONTROLS
from .layers import FAILURE_POLICIES, FailurePolicy

FAIRSEQ, HF, TRAIN_HF, VISION = "fairseq", "hf", "train_hf", "vision"
# The decoder-only language models' front ends: spelled as their seq2seq counterparts, without the encoder.
FAIRSEQ_LM, HF_LM, TRAIN_HF_LM = "fairseq_lm", "hf_lm", "train_hf_lm"
FRONT_ENDS = (FAIRSEQ, HF, TRAIN_HF, VISION, FAIRSEQ_LM, HF_LM, TRAIN_HF_LM)
#: How a front end spells the options (an LM front end as its seq2seq counterpart).
SPELLED_LIKE = {FAIRSEQ_LM: FAIRSEQ, HF_LM: HF, TRAIN_HF_LM: TRAIN_HF}
SEQUENCE_MODELS = frozenset({FAIRSEQ, HF, TRAIN_HF, FAIRSEQ_LM, HF_LM, TRAIN_HF_LM})
ENCODER_DECODER = frozenset({FAIRSEQ, HF, TRAIN_HF})
FAIRSEQ_ONLY = frozenset({FAIRSEQ, FAIRSEQ_LM})
SEQUENCE_TO_SEQUENCE = frozenset({FAIRSEQ, HF, TRAIN_HF})
EVERYWHERE = frozenset(FRONT_ENDS)
#: Where plain layers put their LayerNorms. ODE layers are always pre-norm: their field is the
#: branch, which a LayerNorm after the residual sum would not be.
PLAIN_NORMS = ("pre", "post")
#: How adaptive methods choose their first step (``initial_step``).
INITIAL_STEPS = ("interval", "estimate")


def _method_help() -> str:
    """The method option's help, listing the registry's methods as it is read (never stale)."""
    return (f"ODE solver: a fixed grid ({', '.join(FIXED_GRID_METHODS)}), a learned block "
            f"({', '.join(LEARNED_METHODS)}; sequence models only) or adaptive ({', '.join(ADAPTIVE_METHODS)})")


def _own_loop_methods() -> str:
    return ", ".join(name for name, method in REGISTRY.items() if method.pair is not None)


def _step_control_help() -> str:
    return ("how adaptive methods control their steps: sequence (each sentence its own steps, so its result does not "
            "depend on its batch) or batch (one controller for the whole batch); default sequence where our own loop "
            f"runs the solve ({_own_loop_methods()}, not with the adjoint), batch for the others")


def default_step_control(method: str, gradient: str) -> str:
    """The step control of a front end that was not told one: per row wherever our own loop can."""
    own_loop = getattr(REGISTRY.get(method), "pair", None) is not None
    return "sequence" if own_loop and gradient != "adjoint" else "batch"


def _option(default: Any, help: str | Callable[[], str], *, choices: Sequence[str] | None = None,
            metavar: str | None = None, front_ends: frozenset = EVERYWHERE) -> Any:
    return dataclasses.field(default=default, metadata=dict(help=help, choices=choices, metavar=metavar,
                                                             front_ends=front_ends))


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """The values of every NODE option; the solver's defaults are :data:`~node_seq.ode.DEFAULT_SOLVER`'s
    (the seed's adaptive method on both sides) and the fallback's :data:`~node_seq.ode.DEFAULT_FALLBACK`'s."""

    # which layers are ODE blocks
    encoder: bool = _option(True, "encoder layers are ODE blocks (off: plain pre-norm layers)",
                            front_ends=ENCODER_DECODER)
    decoder: bool = _option(True, "decoder layers are ODE blocks (off: plain pre-norm layers)",
                            front_ends=SEQUENCE_MODELS)
    plain_norm: str = _option("pre", "where the plain (non-ODE) layers normalise: pre (x + f(LN x), one Euler step "
                              "of the ODE layer's field) or post (LN(x + f(x)) per sublayer, as fairseq's "
                              "transformer)", choices=PLAIN_NORMS, front_ends=SEQUENCE_TO_SEQUENCE)
    # the solver (node_seq.ode.SolverConfig); its defaults are the core's one default solver
    method: str = _option(DEFAULT_SOLVER.method, _method_help, choices=METHODS)
    steps: int | None = _option(DEFAULT_SOLVER.steps, "steps of a fixed-grid method over the interval (default 1)",
                                metavar="N")
    step_size: float | None = _option(DEFAULT_SOLVER.step_size, "step size of a fixed-grid method, instead of the "
                                      "steps (rounded so that the grid is uniform)", metavar="H")
    rtol: float = _option(DEFAULT_SOLVER.rtol, "relative tolerance of adaptive methods")
    atol: float = _option(DEFAULT_SOLVER.atol, "absolute tolerance of adaptive methods")
    initial_step: str = _option("interval", "first step of adaptive methods: the whole interval (shrunk by the "
                                "step-size controller if it fails the error test) or an estimate from the field "
                                "(Hairer's rule: one more evaluation, and usually a far smaller step)",
                                choices=INITIAL_STEPS)
    ts: tuple[float, float] = _option((DEFAULT_SOLVER.t0, DEFAULT_SOLVER.t1), "integration interval of every ODE "
                                      "block", metavar="T0,T1", front_ends=SEQUENCE_MODELS)
    gradient: str = _option(DEFAULT_SOLVER.gradient, "how gradients are computed: backprop, checkpoint (recompute "
                            "steps), adjoint (continuous adjoint) or reversible (rebuild states backwards)",
                            choices=GRADIENTS)
    adjoint_rtol: float | None = _option(DEFAULT_SOLVER.adjoint_rtol, "rtol of the adjoint's backward solve "
                                         "(default: the forward rtol)")
    adjoint_atol: float | None = _option(DEFAULT_SOLVER.adjoint_atol, "atol of the adjoint's backward solve "
                                         "(default: the forward atol)")
    seminorm: bool = _option(DEFAULT_SOLVER.seminorm, "adjoint error norm without the parameter channels (fewer "
                             "backward steps)")
    checkpoint_snapshots: int | None = _option(
        DEFAULT_SOLVER.checkpoint_snapshots, "with gradient checkpoint: store at most S states per solve (binomial "
        "schedule, memory independent of the steps, steps recomputed a few times); default one state per step",
        metavar="S")
    max_num_steps: int = _option(DEFAULT_SOLVER.max_num_steps, "adaptive steps (accepted and rejected) allowed per "
                                 "solve (per sentence under step control 'sequence') before it fails")
    # Sequence models only: a vision field may hold batch norm, which mixes the rows of a batch.
    step_control: str | None = _option(None, _step_control_help, choices=STEP_CONTROLS, front_ends=SEQUENCE_MODELS)
    compact_rows: bool = _option(DEFAULT_SOLVER.compact_rows, "under step control sequence, evaluate the field only "
                                 "on the sentences still stepping once others are done (the same result; off: every "
                                 "sentence until the last is done); batch control steps every sentence anyway",
                                 front_ends=SEQUENCE_MODELS)
    # what an ODE layer is
    augment_dims: int = _option(0, "augmented NODE: N extra zero channels inside each ODE block", metavar="N",
                                front_ends=SEQUENCE_MODELS)
    time_dependent: bool = _option(False, "the vector field sees t", front_ends=SEQUENCE_MODELS)
    separated_decoder: bool = _option(False, "decoder self-attention outside the ODE, cross-attention and FFN inside",
                                      front_ends=SEQUENCE_MODELS)
    # decoding and failures
    incremental_cache: bool = _option(True, "fixed-grid decoders cache keys/values per solver stage while "
                                      "generating (off: recompute the prefix)", front_ends=FAIRSEQ_ONLY)
    failure_policy: str = _option(
        "raise", "when a solve fails (max steps, step underflow, inf/nan): raise an error naming the layer, fall back "
        "to a fixed grid for that solve, or skip the batch", choices=FAILURE_POLICIES, front_ends=FAIRSEQ_ONLY)
    fallback_method: str = _option(DEFAULT_FALLBACK.method, "fixed-grid method of the fallback", choices=FALLBACK_METHODS,
                                   front_ends=FAIRSEQ_ONLY)
    fallback_steps: int = _option(DEFAULT_FALLBACK.steps, "steps of the fallback", front_ends=FAIRSEQ_ONLY)
    # how the layers run (HF and train_hf use the Trainer's own torch_compile instead)
    compile: bool = _option(False, "torch.compile every NODE-Transformer layer (a fixed-grid solve, forward and "
                            "backward, becomes one graph; inf/nan is checked once per forward pass)",
                            front_ends=frozenset({FAIRSEQ}))
    # regularisers (training loss terms)
    kinetic_weight: float = _option(0.0, "add W x the kinetic energy of every ODE block (integral of |f|^2 dt, per "
                                    "token) to the training loss", metavar="W", front_ends=SEQUENCE_MODELS)
    jacobian_weight: float = _option(0.0, "add W x the Frobenius norm of every ODE block's Jacobian (integral over "
                                     "t, Hutchinson estimate, per token) to the training loss", metavar="W",
                                     front_ends=SEQUENCE_MODELS)

    # -----------------------------------------------------------------------------------------
    @classmethod
    def from_front_end(cls, values: Mapping[str, Any] | Any, front_end: str) -> "NodeOptions":
        """Read a front end's values (a mapping, or an object such as an argparse namespace or an HF
        config, keyed by that front end's names) and check them; options it does not expose keep
        their defaults."""
        get = values.get if isinstance(values, Mapping) else (lambda key, default: getattr(values, key, default))
        given = {}
        for option in options_of(front_end):
            value = get(option.spelled(front_end, attribute=True), option.default)
            if option.name == "ts":
                value = parse_time_points(value, option.spelled(front_end))
            given[option.name] = value
        return cls(**given).check(front_end)

    def to_front_end(self, front_end: str) -> dict[str, Any]:
        """This front end's ``{attribute name: value}`` for the options it exposes."""
        return {option.spelled(front_end, attribute=True): getattr(self, option.name)
                for option in options_of(front_end)}

    def check(self, front_end: str = HF) -> "NodeOptions":
        """Raise :class:`OptionError` for the first invalid option, named as ``front_end`` spells it."""
        spell = lambda name: OPTIONS[name].spelled(front_end)  # noqa: E731
        self.solver(front_end)
        for option in options_of(front_end):
            value = getattr(self, option.name)
            if option.choices is not None and value not in option.choices and not (option.optional and value is None):
                raise OptionError(f"{spell(option.name)}: unknown value {value!r}; choose one of "
                                  f"{', '.join(option.choices)}")
        _whole(self.augment_dims, 0, spell("augment_dims"))
        _whole(self.fallback_steps, 1, spell("fallback_steps"))
        for name in ("kinetic_weight", "jacobian_weight"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (math.isfinite(weight)
                                                                                       and weight >= 0):
                raise OptionError(f"{spell(name)}: must be a finite number >= 0, got {weight!r}")
        if self.method in LEARNED_METHODS:
            self._check_learned_block(front_end, spell)
        if self.plain_norm == "post" and self.encoder and self.decoder:
            raise OptionError(f"{spell('plain_norm')}: 'post' applies to plain layers, but both sides are ODE "
                              f"blocks; turn one off ({spell('encoder')}, {spell('decoder')}) or leave it at 'pre'")
        if self.separated_decoder and not self.decoder:
            raise OptionError(f"{spell('separated_decoder')}: needs {spell('decoder')} (without it the decoder "
                              "is not an ODE)")
        return self

    def _check_learned_block(self, front_end: str, spell: Callable[[str], str]) -> None:
        """A learned block lives in a sequence model's layers, and its step integrates nothing else."""
        if front_end not in SEQUENCE_MODELS:
            raise OptionError(f"{spell('method')}: {self.method!r} is a learned block of the sequence models' layers "
                              f"(fairseq, HF); here choose a fixed grid or adaptive method")
        for name in ("kinetic_weight", "jacobian_weight"):
            if getattr(self, name) > 0:
                raise OptionError(f"{spell(name)}: the regularisers are integrals over the solve, which the learned "
                                  f"block {self.method!r} does not compute; use a method with fixed coefficients "
                                  "or leave it at 0")

    def final_layer_norm(self, side: str) -> bool:
        """Whether ``side`` ends with a LayerNorm: pre-norm layers leave their sum unnormalised, so a
        side of them needs one; post-norm layers end normalised (fairseq's ``normalize_before``)."""
        return getattr(self, side) or self.plain_norm == "pre"

    def check_width(self, side: str, width: int, heads: int, heads_option: str, front_end: str) -> None:
        """An augmented ODE layer attends over ``width + augment_dims`` channels: the heads must divide them."""
        extra = self.augment_dims if getattr(self, side) else 0
        if extra and (width + extra) % heads:
            allowed = [n for n in range(0, 4 * heads) if (width + n) % heads == 0][:4]
            raise OptionError(
                f"{OPTIONS['augment_dims'].spelled(front_end)}: {side} width {width} + {extra} augmented dims is not "
                f"divisible by {heads_option} {heads}; use a value such as {', '.join(map(str, allowed))}")

    def solver(self, front_end: str = HF) -> SolverConfig:
        """The solver of every ODE block, validated; a fixed grid's size is whole ``steps``."""
        spelled = {name: OPTIONS[name].spelled(front_end) for name in _SOLVER_FIELDS}
        t0, t1 = self.ts
        # A layer's field starts near zero and a Transformer needs few steps through it: trying the
        # whole interval first is usually one accepted step, where the estimate took 3-5 (benchmarks.adaptive_path).
        first_step = t1 - t0 if self.initial_step == "interval" and self.method in ADAPTIVE_METHODS else None
        step_control = self.step_control or (default_step_control(self.method, self.gradient)
                                             if front_end in OPTIONS["step_control"].front_ends else "batch")
        config = SolverConfig(**{name: getattr(self, name) for name in _SOLVER_FIELDS}, t0=t0, t1=t1,
                              first_step=first_step, step_control=step_control)
        config = config.validate({**spelled, "step_control": OPTIONS["step_control"].spelled(front_end),
                                  "t0": OPTIONS["ts"].spelled(front_end),
                                  "t1": OPTIONS["ts"].spelled(front_end)}).with_uniform_grid()
        if config.is_fixed_grid:  # one step unless told otherwise
            return dataclasses.replace(config, steps=config.steps or 1)
        return dataclasses.replace(config, steps=None)  # a grid means nothing to an adaptive method

    def failure(self) -> FailurePolicy:
        return FailurePolicy(self.failure_policy, SolverConfig(method=self.fallback_method, steps=self.fallback_steps))


_SOLVER_FIELDS = ("method", "steps", "step_size", "rtol", "atol", "gradient", "adjoint_rtol", "adjoint_atol",
                  "seminorm", "checkpoint_snapshots", "max_num_steps", "compact_rows")


def _whole(value: Any, low: int, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(f"{option}: must be an integer >= {low}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Option:
    """One NODE option as the front ends see it (a view of a :class:`NodeOptions` field)."""

    name: str
    type: Any  # the field's annotation, e.g. ``int | None``
    default: Any
    describe: str | Callable[[], str]  # the help, or what writes it when asked (a list of methods)
    choices: Sequence[str] | None
    metavar: str | None
    front_ends: frozenset

    @property
    def help(self) -> str:
        return self.describe() if callable(self.describe) else self.describe

    @property
    def optional(self) -> bool:
        return self._is_union and type(None) in typing.get_args(self.type)

    @property
    def base_type(self) -> type:
        """``int`` for ``int | None``; ``tuple`` for the time interval."""
        base = self.type
        if self._is_union:
            base = next(a for a in typing.get_args(self.type) if a is not type(None))
        return typing.get_origin(base) or base

    @property
    def _is_union(self) -> bool:
        return typing.get_origin(self.type) in (typing.Union, types.UnionType)

    def spelled(self, front_end: str, *, attribute: bool = False) -> str:
        """How the user writes this option: ``--node-step-size`` (fairseq, train_hf), ``node_step_size``
        (HF config), ``--step-size`` (vision); ``attribute``: the name it is stored under."""
        front_end = SPELLED_LIKE.get(front_end, front_end)
        if front_end == HF or (attribute and front_end in (FAIRSEQ, TRAIN_HF)):
            return f"node_{self.name}"
        if front_end == VISION:
            return self.name if attribute else "--" + self.name.replace("_", "-")
        return "--node-" + self.name.replace("_", "-")


def _collect() -> dict[str, Option]:
    hints = typing.get_type_hints(NodeOptions)
    return {f.name: Option(f.name, hints[f.name], f.default, f.metadata["help"], f.metadata["choices"],
                           f.metadata["metavar"], f.metadata["front_ends"])
            for f in dataclasses.fields(NodeOptions)}


#: Every NODE option by name, in declaration order.
OPTIONS: dict[str, Option] = _collect()


def options_of(front_end: str) -> Iterator[Option]:
    """The options ``front_end`` exposes, in declaration order."""
    if front_end not in FRONT_ENDS:
        raise ValueError(f"unknown front end {front_end!r}; one of {', '.join(FRONT_ENDS)}")
    return (option for option in OPTIONS.values() if front_end in option.front_ends)


def format_time_points(points: tuple[float, float]) -> str:
    return ",".join(f"{p:g}" for p in points)


def add_arguments(parser: argparse.ArgumentParser | Any, front_end: str) -> None:
    """Add ``front_end``'s NODE options to an argparse parser (or argument group): booleans as
    ``--node-x``/``--no-node-x``, choices checked by argparse, the interval as ``T0,T1``."""
    for option in options_of(front_end):
        flag, dest = option.spelled(front_end), option.spelled(front_end, attribute=True)
        if option.base_type is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=option.default,
                                help=option.help)
        elif option.base_type is tuple:
            parser.add_argument(flag, dest=dest, type=str, default=format_time_points(option.default),
                                metavar=option.metavar, help=option.help)
        else:
            parser.add_argument(flag, dest=dest, type=option.base_type, default=option.default,
                                choices=option.choices, metavar=option.metavar, help=option.help)


def hf_annotation(option: Option) -> Any:
    """The type an HF config field of this option accepts (JSON writes ``1.0`` as ``1``)."""
    base = {float: float | int, tuple: list | tuple | str}.get(option.base_type, option.base_type)
    return base | None if option.optional else base


def fill_missing(values: Any, front_end: str, setter: Callable[[str, Any], None]) -> None:
    """Give an object that predates some options (an old checkpoint's namespace) their defaults."""
    for option in options_of(front_end):
        name = option.spelled(front_end, attribute=True)
        default = format_time_points(option.default) if option.base_type is tuple else option.default
        if getattr(values, name, None) is None and default is not None:
            setter(name, default)
        elif not hasattr(values, name):
            setter(name, default)
