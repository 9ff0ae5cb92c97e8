"""ODENet image classifiers, read top to bottom: helpers, vector fields, blocks, models, registry.

Every ODE block integrates through :func:`node_seq.ode.solve`; a model's solver is one
:class:`~node_seq.ode.SolverConfig` shared by its ODE blocks and swapped with :meth:`set_solver`
(step adaptation, solver-swap evaluation). All constructors are keyword-only, and every model
splits into ``forward_features`` and ``forward_head``.

The variants:

* ``odenet4/6/10/18/34``: "Towards Understanding Normalization in Neural ODEs" (Gusak et al.):
  a ResNet whose size-keeping blocks are ODE blocks, with the norm chosen per place.
* ``continuousnet``: "Continuous-in-Depth Neural Networks" (Queiruga et al.): three stages, each a
  downsampling stitch and an ODE block whose weights are piecewise constant in depth, ``K`` pieces
  per block, refined during training by splitting every piece in two.
* ``simple_odenet`` and ``odenet``: "ResNet After All?" (Ott et al.): one ODE block on the raw
  input (a vector or an image) followed by a linear head.
"""

from __future__ import annotations

import copy
import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from node_seq.ode import DEFAULT_SOLVER, OptionError, SolverConfig, SolveStats, current_stage, solve

from .norms import NormSpec, activation, output_norm, parse_norm, weight_normed


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def conv(in_ch: int, out_ch: int, kernel: int, *, norm: NormSpec, stride: int = 1, dims: int = 2) -> nn.Module:
    """A conv with its weight norm applied; no bias when an output norm follows (it would cancel)."""
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    layer = cls(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=norm.output == "none")
    return weight_normed(layer, norm.weight)


def piece_index(t: torch.Tensor, num_pieces: int, grid_steps: int | None) -> int:
    """Which weight piece a vector-field evaluation uses.

    On a fixed grid every stage of step ``i`` uses the piece holding the step's midpoint, so a stage
    that lands on a piece boundary (RK4's last stage, a reversed Euler step) still uses its own
    step's weights, as ContinuousNet's "open set" stage times intend. Adaptive solvers and the
    continuous adjoint evaluate at arbitrary times and use the piece holding ``t``.
    """
    if num_pieces == 1:
        return 0
    stage = current_stage()
    position = (stage.step + 0.5) / grid_steps if stage is not None and grid_steps else float(t)
    return min(num_pieces - 1, max(0, int(position * num_pieces)))


# ---------------------------------------------------------------------------------------------
# vector fields: f(t, y, grid_steps) -> dy/dt, same shape as y
# ---------------------------------------------------------------------------------------------

class ConvField(nn.Module):
    """``conv3x3 -> norm -> act -> conv3x3 -> norm [-> act]``, autonomous.

    With ``final_activation`` (Gusak et al.'s ODE block) a ReLU field is non-negative; without it
    (ContinuousNet) it is the residual branch of a ResNet block.
    """

    def __init__(self, *, channels: int, norm: NormSpec, act: str, final_activation: bool):
        super().__init__()
        self.conv1 = conv(channels, channels, 3, norm=norm)
        self.norm1 = output_norm(norm.output, channels, in_ode=True)
        self.act1 = activation(act)
        self.conv2 = conv(channels, channels, 3, norm=norm)
        self.norm2 = output_norm(norm.output, channels, in_ode=True)
        self.act2 = activation(act) if final_activation else nn.Identity()

    def forward(self, t: torch.Tensor, y: torch.Tensor, grid_steps: int | None = None) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(y)))  # (batch, channels, height, width)
        out = self.act2(self.norm2(self.conv2(out)))
        return out.to(y.dtype)


class BottleneckField(nn.Module):
    """``conv1x1 (c -> C) -> act -> conv3x3 (C -> C) -> act -> conv1x1 (C -> c)`` ("ResNet After All?").

    Works on vectors seen as one-channel 1-d signals (``dims=1``) or on images (``dims=2``).
    """

    def __init__(self, *, channels: int, hidden: int, norm: NormSpec, act: str, dims: int):
        super().__init__()
        self.net = nn.Sequential(
            conv(channels, hidden, 1, norm=norm, dims=dims), output_norm(norm.output, hidden, dims, in_ode=True),
            activation(act),
            conv(hidden, hidden, 3, norm=norm, dims=dims), output_norm(norm.output, hidden, dims, in_ode=True),
            activation(act),
            weight_normed((nn.Conv2d if dims == 2 else nn.Conv1d)(hidden, channels, 1), norm.weight),
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor, grid_steps: int | None = None) -> torch.Tensor:
        return self.net(y).to(y.dtype)


class PiecewiseField(nn.Module):
    """Weights piecewise constant in depth: piece ``k`` is its own field on ``[k/K, (k+1)/K)``.

    Each piece is a whole module, so norms are per piece too: ``bn`` here is ContinuousNet's
    time-indexed BN, one set of running statistics per piece.
    """

    def __init__(self, pieces: Sequence[nn.Module]):
        super().__init__()
        self.pieces = nn.ModuleList(pieces)

    @property
    def num_pieces(self) -> int:
        return len(self.pieces)

    def forward(self, t: torch.Tensor, y: torch.Tensor, grid_steps: int | None = None) -> torch.Tensor:
        return self.pieces[piece_index(t, self.num_pieces, grid_steps)](t, y, grid_steps)

    def split(self, factor: int = 2) -> dict[nn.Parameter, list[nn.Parameter]]:
        """Replace every piece by ``factor`` copies of itself (piecewise-constant prolongation).

        The field is unchanged as a function of ``t``; returns which new parameters each old one
        became, for :func:`transfer_optimizer_state`.
        """
        new_pieces, mapping = [], {}
        for piece in self.pieces:
            copies = [copy.deepcopy(piece) for _ in range(factor)]
            for (name, old), *news in zip(piece.named_parameters(), *(c.named_parameters() for c in copies)):
                mapping[old] = [p for _, p in news]
            new_pieces.extend(copies)
        self.pieces = nn.ModuleList(new_pieces)
        return mapping


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------

class ODEBlock(nn.Module):
    """``y(1)`` of ``dy/dt = func(t, y)`` from ``y(0) = x``, solved by the node-seq ODE core."""

    def __init__(self, func: nn.Module, solver: SolverConfig = DEFAULT_SOLVER):
        super().__init__()
        self.func = func
        self.solver = solver
        self.last_stats: SolveStats | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid_steps = self.solver.steps if self.solver.is_fixed_grid else None
        if torch.is_autocast_enabled(x.device.type):
            x = x.float()  # the state stays in float32; the convs inside run in low precision
        y, stats = solve(self.func, x, self.solver, inputs=(grid_steps,))
        self.last_stats = stats  # its nfe_backward is filled in by .backward()
        return y


class ResBlock(nn.Module):
    """A ResNet basic block; the ones that change the spatial size stay discrete."""

    def __init__(self, *, in_ch: int, out_ch: int, stride: int, norm: NormSpec, act: str):
        super().__init__()
        self.conv1 = conv(in_ch, out_ch, 3, norm=norm, stride=stride)
        self.norm1 = output_norm(norm.output, out_ch)
        self.act1 = activation(act)
        self.conv2 = conv(out_ch, out_ch, 3, norm=norm)
        self.norm2 = output_norm(norm.output, out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, norm=norm, stride=stride),
                                          output_norm(norm.output, out_ch))
        self.act2 = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def stem(in_ch: int, out_ch: int, norm: NormSpec, act: str) -> nn.Sequential:
    return nn.Sequential(conv(in_ch, out_ch, 3, norm=norm), output_norm(norm.output, out_ch), activation(act))


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

class ODEClassifier(nn.Module):
    """What every vision model shares: solver control, solve statistics, features/head split."""

    #: name and constructor keywords, set by :func:`create_model`; enough to rebuild the model.
    spec: dict

    def ode_blocks(self) -> list[ODEBlock]:
        return [m for m in self.modules() if isinstance(m, ODEBlock)]

    @property
    def solver(self) -> SolverConfig:
        return self.ode_blocks()[0].solver

    def set_solver(self, solver: SolverConfig) -> None:
        """Use ``solver`` in every ODE block from the next forward pass on."""
        solver.validate()
        for block in self.ode_blocks():
            block.solver = solver

    def solve_stats(self) -> SolveStats:
        """The summed statistics of the last forward pass (and of its backward, once run)."""
        total = SolveStats()
        for block in self.ode_blocks():
            if block.last_stats is not None:
                total = total + block.last_stats
        return total

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ODENet(ODEClassifier):
    """conv -> norm -> act -> per stage: [ResBlock]* -> [ODE block]* -> avgpool -> fc.

    ``stages`` lists ``(resnet_blocks, ode_blocks)``; stage ``i`` has ``width * 2**i`` channels and,
    from the second stage on, starts with a stride-2 ResBlock (ODE blocks keep the size).
    """

    def __init__(self, *, stages: Sequence[tuple[int, int]], num_classes: int, input_shape: Sequence[int],
                 width: int, norm: str, activation: str):
        super().__init__()
        norms = parse_norm(norm)
        self.stem = stem(input_shape[0], width, norms["stem"], activation)
        layers: list[nn.Module] = []
        in_ch = width
        for i, (num_res, num_ode) in enumerate(stages):
            out_ch, stride = width * 2 ** i, 1 if i == 0 else 2
            assert num_res >= 1 or (stride == 1 and in_ch == out_ch), \
                f"stage {i} changes size, so it needs at least one ResNet block"
            for j in range(num_res):
                layers.append(ResBlock(in_ch=in_ch, out_ch=out_ch, stride=stride if j == 0 else 1,
                                       norm=norms["res"], act=activation))
                in_ch = out_ch
            for _ in range(num_ode):
                layers.append(ODEBlock(ConvField(channels=out_ch, norm=norms["ode"], act=activation,
                                                 final_activation=True)))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)  # (batch, channels)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)  # (batch, classes)


class ContinuousNet(ODEClassifier):
    """stem -> per stage: stitch (ResBlock, stride 2 after the first) -> piecewise ODE block -> head.

    ``pieces`` gives ``K`` per stage ("2-2-2"). :meth:`refine` splits every piece in two
    (1-1-1 -> 2-2-2), :meth:`untie` turns a tied model (one piece) into one with ``K`` copies.
    """

    def __init__(self, *, num_classes: int, input_shape: Sequence[int], width: int, pieces: Sequence[int],
                 norm: str, activation: str):
        super().__init__()
        norms = parse_norm(norm)
        self._ode_norm, self._activation = norms["ode"], activation
        self.stem = stem(input_shape[0], width, norms["stem"], activation)
        stages = []
        in_ch = width
        for i, k in enumerate(pieces):
            out_ch = width * 2 ** i
            field = PiecewiseField([self._piece(out_ch) for _ in range(k)])
            stages.append(nn.Sequential(
                ResBlock(in_ch=in_ch, out_ch=out_ch, stride=1 if i == 0 else 2, norm=norms["res"], act=activation),
                ODEBlock(field)))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def _piece(self, channels: int) -> ConvField:
        return ConvField(channels=channels, norm=self._ode_norm, act=self._activation, final_activation=False)

    @property
    def pieces(self) -> list[int]:
        return [block.func.num_pieces for block in self.ode_blocks()]

    def refine(self, factor: int = 2) -> dict[nn.Parameter, list[nn.Parameter]]:
        """Split every piece into ``factor`` copies; the model computes the same function."""
        mapping: dict = {}
        for block in self.ode_blocks():
            mapping.update(block.func.split(factor))
        self.spec = {**self.spec, "kwargs": {**self.spec["kwargs"], "pieces": self.pieces}}
        return mapping

    def untie(self, pieces: int) -> dict[nn.Parameter, list[nn.Parameter]]:
        """Copy the weights of a tied model (one piece per block) into ``pieces`` untied pieces."""
        if any(k != 1 for k in self.pieces):
            raise ValueError(f"untie needs a tied model (one piece per block), this one has {self.pieces}")
        return self.refine(pieces)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


class SingleBlockODENet(ODEClassifier):
    """One ODE block on the raw input, then a linear head ("ResNet After All?").

    Vectors ``(batch, dim)`` are integrated as one-channel 1-d signals with a Conv1d field;
    images ``(batch, C, H, W)`` directly at full resolution, with no stem and no downsampling.
    """

    def __init__(self, *, num_classes: int, input_shape: Sequence[int], width: int, norm: str, activation: str):
        super().__init__()
        self.input_shape = tuple(input_shape)
        vector = len(self.input_shape) == 1
        channels = 1 if vector else self.input_shape[0]
        self.block = ODEBlock(BottleneckField(channels=channels, hidden=width, norm=parse_norm(norm)["ode"],
                                              act=activation, dims=1 if vector else 2))
        numel = 1
        for size in self.input_shape:
            numel *= size
        self.fc = nn.Linear(numel, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.input_shape) == 1:
            x = x.reshape(x.shape[0], 1, -1)  # (batch, 1, dim)
        return self.block(x).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


# ---------------------------------------------------------------------------------------------
# optimizer state across a refinement
# ---------------------------------------------------------------------------------------------

def transfer_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module,
                             mapping: dict[nn.Parameter, list[nn.Parameter]]) -> None:
    """Point ``optimizer`` at the refined model's parameters, each copy inheriting its source's state.

    Momentum (SGD) or moment estimates (Adam) are copied rather than reset: every copy of a piece
    starts where the piece was, so its optimizer history is as valid for it as for the original.
    Parameters are listed in ``model.parameters()`` order, so a checkpoint's optimizer state loads
    back into a freshly built refined model.
    """
    order = {p: i for i, p in enumerate(model.parameters())}
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            for q in mapping.get(p, [p]):
                params.append(q)
                if p in optimizer.state and q is not p:
                    optimizer.state[q] = {k: v.clone() if isinstance(v, torch.Tensor) else v
                                          for k, v in optimizer.state[p].items()}
        group["params"] = sorted(params, key=lambda q: order[q])
    for p in mapping:
        optimizer.state.pop(p, None)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

_MODELS: dict[str, Callable[..., ODEClassifier]] = {}


def register_model(fn: Callable[..., ODEClassifier]) -> Callable[..., ODEClassifier]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """The keyword options a model takes besides ``num_classes`` and ``input_shape``."""
    params = inspect.signature(_MODELS[name]).parameters
    return [p for p in params if p not in ("num_classes", "input_shape")]


def create_model(name: str, **kwargs) -> ODEClassifier:
    """Build a registered model; unknown names or options raise :class:`OptionError`."""
    if name not in _MODELS:
        raise OptionError(f"model: unknown model {name!r}; choose one of {', '.join(list_models())}")
    allowed = model_options(name)
    unknown = sorted(set(kwargs) - set(allowed) - {"num_classes", "input_shape"})
    if unknown:
        raise OptionError(f"model_args: model {name!r} has no option {', '.join(map(repr, unknown))}; "
                          f"its options are {', '.join(allowed)}")
    _check_common(kwargs)
    model = _MODELS[name](**kwargs)
    bound = inspect.signature(_MODELS[name]).bind(**kwargs)
    bound.apply_defaults()
    model.spec = {"name": name, "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                           for k, v in bound.arguments.items()}}
    return model


def _check_common(kwargs: dict) -> None:
    from .norms import ACTIVATIONS

    width = kwargs.get("width", 1)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise OptionError(f"model_args.width: must be an integer >= 1, got {width!r}")
    if "activation" in kwargs and kwargs["activation"] not in ACTIVATIONS:
        raise OptionError(f"model_args.activation: unknown activation {kwargs['activation']!r}; "
                          f"choose one of {', '.join(ACTIVATIONS)}")
    if "norm" in kwargs:
        parse_norm(kwargs["norm"], option="model_args.norm")
    if "pieces" in kwargs:
        pieces = kwargs["pieces"]
        if isinstance(pieces, str):
            parts = pieces.split("-")
            if all(part.strip().isdigit() for part in parts):
                pieces = kwargs["pieces"] = [int(part) for part in parts]
        if (not isinstance(pieces, (list, tuple)) or not pieces
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in pieces)):
            raise OptionError(f"model_args.pieces: expected pieces per stage such as [2, 2, 2] or '2-2-2', "
                              f"got {pieces!r}")


def _odenet(stages, *, num_classes, input_shape, width, norm, activation) -> ODENet:
    return ODENet(stages=stages, num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                  activation=activation)


@register_model
def odenet4(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 16,
            norm: str = "bn-ln", activation: str = "relu") -> ODENet:
    """conv -> norm -> act -> ODE block -> avgpool -> fc."""
    return _odenet([(0, 1)], num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                   activation=activation)


@register_model
def odenet6(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 64,
            norm: str = "bn-ln", activation: str = "relu") -> ODENet:
    return _odenet([(1, 1)], num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                   activation=activation)


@register_model
def odenet10(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 64,
             norm: str = "bn-ln", activation: str = "relu") -> ODENet:
    """conv -> norm -> act -> ResBlock -> ODE -> ResBlock (stride 2) -> ODE -> avgpool -> fc."""
    return _odenet([(1, 1), (1, 1)], num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                   activation=activation)


@register_model
def odenet18(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 64,
             norm: str = "bn-ln", activation: str = "relu") -> ODENet:
    return _odenet([(1, 1)] * 4, num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                   activation=activation)


@register_model
def continuousnet(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 16,
                  pieces: Sequence[int] = (1, 1, 1), norm: str = "bn-ln", activation: str = "relu") -> ContinuousNet:
    """ContinuousNet with ``pieces`` weight pieces per stage ("1-1-1", refined to "2-2-2", ...)."""
    return ContinuousNet(num_classes=num_classes, input_shape=input_shape, width=width, pieces=list(pieces),
                         norm=norm, activation=activation)


@register_model
def simple_odenet(*, num_classes: int = 2, input_shape: Sequence[int] = (2,), width: int = 32,
                  norm: str = "none", activation: str = "relu") -> SingleBlockODENet:
    """One Conv1d ODE block on a low-dimensional vector, then a linear head (concentric spheres)."""
    return SingleBlockODENet(num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                             activation=activation)


@register_model
def odenet(*, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32), width: int = 128,
           norm: str = "none", activation: str = "relu") -> SingleBlockODENet:
    """One ODE block on the raw image (no stem, no downsampling), then a linear head."""
    return SingleBlockODENet(num_classes=num_classes, input_shape=input_shape, width=width, norm=norm,
                             activation=activation)
