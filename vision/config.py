"""The training configuration: one flat, typed, validated set of options.

A YAML/JSON file gives values, ``--option value`` on the command line overrides them (only the
options actually typed: a default never overrides a file), and :meth:`TrainConfig.validate`
rejects bad values before any work, naming the option as the user types it (``--lr``) and the
allowed values. Booleans are parsed as words (``true``/``false``/``yes``/``no``/``1``/``0``),
never as "present means true". The resolved config is written next to the checkpoints, so a run
can be reproduced from its output folder alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from node_seq.nn.options import VISION, NodeOptions, options_of
from node_seq.ode import MethodNames, OptionError, SolverConfig
from node_seq.ode.methods import LEARNED

from .data import DATASETS
from .models import create_model, list_models

#: The methods an ODENet block can use: its blocks own no learned coefficients (rk2_gated and pc
#: are the sequence models' layers).
METHODS = MethodNames(lambda method: method.kind != LEARNED)
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "multistep", "cosine")
DEVICES = ("auto", "cpu", "cuda")
PROGRESS = ("auto", "bar", "plain", "none")
VECTOR_MODELS = ("simple_odenet", "odenet")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field(default: Any, kind: str, help: str) -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default)) \
        if isinstance(default, dict) else None
    meta = {"kind": kind, "help": help}
    if factory:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _solver_options() -> type:
    """The solver keys (``method``, ``steps``, ...), generated from node-seq's one description of
    the NODE options (:class:`~node_seq.nn.options.NodeOptions`): same defaults, same checks."""
    kinds = {bool: "bool", int: "int", float: "float", str: "str"}
    return dataclasses.make_dataclass("SolverOptions", [
        (option.name, option.type, _field(option.default, kinds[option.base_type] + "?" * option.optional, option.help))
        for option in options_of(VISION)])


@dataclasses.dataclass
class TrainConfig(_solver_options()):
    # run
    output_dir: str | None = _field(None, "str?", "folder for config.yaml, metrics.json and checkpoints")
    seed: int = _field(0, "int", "seed of initialization, shuffling and augmentation")
    data_seed: int = _field(0, "int", "seed of generated data and of train/val/test splits")
    device: str = _field("auto", "str", "auto (cuda if present), cpu or cuda")
    amp: str = _field("auto", "str", "mixed precision (bfloat16 autocast): auto (on with cuda), true, false")
    num_threads: int | None = _field(None, "int?", "torch CPU threads (default: torch's choice)")
    overwrite: bool = _field(False, "bool", "train into an output dir that already holds a run")
    # data
    dataset: str = _field("digits", "str", "dataset name")
    data_dir: str | None = _field(None, "str?", "folder with MNIST/CIFAR files")
    download: bool = _field(False, "bool", "download MNIST/CIFAR into --data-dir if asked")
    augment: bool = _field(True, "bool", "random crop (and flip for CIFAR) on training batches")
    val_fraction: float = _field(0.0, "float", "fraction of the training split held out for validation")
    train_subset: int | None = _field(None, "int?", "use only this many training examples")
    test_subset: int | None = _field(None, "int?", "use only this many test examples")
    n_train: int = _field(2000, "int", "generated training points (spheres)")
    n_test: int = _field(1000, "int", "generated test points (spheres)")
    batch_size: int = _field(128, "int", "training batch size")
    test_batch_size: int = _field(512, "int", "evaluation batch size")
    # model
    model: str = _field("odenet4", "str", "registered model name")
    model_args: dict = _field({}, "dict", "model keyword options, e.g. {width: 16, norm: bn-ln}")
    init_from: str | None = _field(None, "str?", "checkpoint to start from; a tied continuousnet is untied "
                                                 "to model_args.pieces")
    # optimization
    epochs: int = _field(10, "int", "training epochs")
    optimizer: str = _field("sgd", "str", "optimizer")
    lr: float = _field(0.1, "float", "learning rate")
    momentum: float = _field(0.9, "float", "SGD momentum")
    weight_decay: float = _field(5e-4, "float", "weight decay")
    lr_schedule: str = _field("constant", "str", "learning-rate schedule")
    lr_milestones: list = _field([], "list[int]", "epochs after which a multistep schedule multiplies by lr_gamma")
    lr_gamma: float = _field(0.1, "float", "multistep factor")
    # refinement (continuousnet)
    refine_epochs: list = _field([], "list[int]", "epochs (1-based) at whose start every weight piece splits in two")
    refine_steps: bool = _field(True, "bool", "double the solver steps at each refinement (one step per piece)")
    # step adaptation
    adapt_steps: bool = _field(False, "bool", "adapt the step (or tolerance) during training")
    adapt_interval: int = _field(50, "int", "iterations between adaptation checks")
    adapt_threshold: float = _field(0.1, "float", "largest accuracy gap to the reference solver")
    adapt_max_steps: int = _field(500, "int", "most steps adaptation may reach")
    adapt_growth: float = _field(1.1, "float", "step growth tried when the solvers agree")
    adapt_samples: int = _field(512, "int", "examples of the adaptation set (validation split if any)")
    # evaluation
    eval_solvers: bool = _field(False, "bool", "after training, evaluate under every test solver and factor")
    test_solver_list: list = _field(["euler", "midpoint", "rk4"], "list[str]", "solvers of the swap evaluation")
    test_factor_list: list = _field([0.5, 1.0, 2.0], "list[float]", "test step = train step / factor")
    # logging
    progress: str = _field("auto", "str", "auto (bar on a terminal), bar, plain or none")
    log_interval: int = _field(50, "int", "iterations between plain progress lines")

    # -----------------------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        config = cls()
        config.update(values, source)
        return config

    def update(self, values: dict, source: str = "config") -> None:
        fields = self.fields()
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in fields:
                import difflib

                close = difflib.get_close_matches(name, fields, n=1)
                hint = f" (did you mean {flag(close[0])}?)" if close else ""
                raise OptionError(f"{source}: unknown option {key!r}{hint}; known options: "
                                  f"{', '.join(sorted(fields))}")
            value = coerce(name, fields[name].metadata["kind"], value)
            if name == "model_args":
                value = {**self.model_args, **value}
            setattr(self, name, value)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def solver_config(self) -> SolverConfig:
        """The training solver, checked; a ``step_size`` becomes whole ``steps`` (the grid stays uniform)."""
        return NodeOptions.from_front_end(self, VISION).solver(VISION)

    def validate(self) -> "TrainConfig":
        """Raise :class:`OptionError` for the first invalid option; return ``self`` otherwise."""
        choose(self.dataset, DATASETS, "dataset")
        choose(self.model, list_models(), "model")
        choose(self.device, DEVICES, "device")
        choose(self.optimizer, OPTIMIZERS, "optimizer")
        choose(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        choose(self.progress, PROGRESS, "progress")
        if self.amp not in ("auto", "true", "false"):
            raise OptionError(f"{flag('amp')}: expected auto, true or false, got {self.amp!r}")
        if self.output_dir is None:
            raise OptionError(f"{flag('output_dir')}: required (a folder for the run's files)")
        self.solver_config()
        positive("lr", self.lr)
        positive("lr_gamma", self.lr_gamma)
        in_range("momentum", self.momentum, 0.0, 1.0, upper_open=True)
        in_range("weight_decay", self.weight_decay, 0.0, math.inf)
        in_range("val_fraction", self.val_fraction, 0.0, 1.0, upper_open=True)
        in_range("adapt_threshold", self.adapt_threshold, 0.0, 1.0, lower_open=True)
        for name in ("epochs", "batch_size", "test_batch_size", "adapt_interval", "adapt_max_steps", "adapt_samples",
                     "log_interval", "n_train", "n_test"):
            at_least(name, getattr(self, name), 1)
        for name in ("train_subset", "test_subset", "num_threads"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        if not (math.isfinite(self.adapt_growth) and self.adapt_growth > 1):
            raise OptionError(f"{flag('adapt_growth')}: must be a number > 1, got {self.adapt_growth!r}")
        for name in ("lr_milestones", "refine_epochs"):
            values = getattr(self, name)
            if any(v < 1 for v in values) or list(values) != sorted(set(values)):
                raise OptionError(f"{flag(name)}: expected increasing epoch numbers >= 1, got {values!r}")
        for method in self.test_solver_list:
            choose(method, METHODS, "test_solver_list")
        for factor in self.test_factor_list:
            if not (math.isfinite(factor) and factor > 0):
                raise OptionError(f"{flag('test_factor_list')}: factors must be numbers > 0, got {factor!r}")
        if self.dataset in ("mnist", "cifar10", "cifar100") and not self.data_dir:
            raise OptionError(f"{flag('data_dir')}: dataset {self.dataset!r} is read from local files; "
                              "give the folder that holds them (add --download true to fetch them there)")
        if self.download and not self.data_dir:
            raise OptionError(f"{flag('download')}: needs {flag('data_dir')} to download into")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise OptionError(f"{flag('device')}: cuda requested but no GPU is available; use auto or cpu")
        if self.amp == "true" and self.resolved_device() != "cuda":
            raise OptionError(f"{flag('amp')}: mixed precision needs a CUDA device; use auto or false on CPU")
        if self.refine_epochs and self.model != "continuousnet":
            raise OptionError(f"{flag('refine_epochs')}: only continuousnet has weight pieces to refine, "
                              f"not {self.model!r}")
        if self.refine_epochs and max(self.refine_epochs) > self.epochs:
            raise OptionError(f"{flag('refine_epochs')}: epoch {max(self.refine_epochs)} is after the last "
                              f"epoch ({self.epochs})")
        if self.refine_epochs and self.adapt_steps:
            raise OptionError(f"{flag('adapt_steps')}: cannot be combined with {flag('refine_epochs')} "
                              "(both change the steps)")
        if self.init_from is not None and not os.path.isfile(self.init_from):
            raise OptionError(f"{flag('init_from')}: no checkpoint file {self.init_from!r}")
        self.check_model()
        return self

    def check_model(self) -> None:
        """Build the model once on the CPU with a placeholder input: catches bad model options early."""
        shape = {"spheres2": (2,), "spheres3": (3,), "spheres10": (10,), "digits": (1, 8, 8),
                 "mnist": (1, 28, 28)}.get(self.dataset, (3, 32, 32))
        if len(shape) == 1 and self.model not in VECTOR_MODELS:
            raise OptionError(f"{flag('model')}: {self.model!r} classifies images; for the vector dataset "
                              f"{self.dataset!r} choose one of {', '.join(VECTOR_MODELS)}")
        create_model(self.model, num_classes=10, input_shape=shape, **self.model_args)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# value checks
# ---------------------------------------------------------------------------------------------

def choose(value: Any, allowed, name: str) -> None:
    if value not in allowed:
        raise OptionError(f"{flag(name)}: unknown value {value!r}; choose one of {', '.join(allowed)}")


def positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise OptionError(f"{flag(name)}: must be a finite number > 0, got {value!r}")


def in_range(name: str, value: float, low: float, high: float, *, lower_open: bool = False,
             upper_open: bool = False) -> None:
    ok = (value > low if lower_open else value >= low) and (value < high if upper_open else value <= high)
    if not ok or math.isnan(value):
        bounds = f"{'(' if lower_open else '['}{low:g}, {high:g}{')' if upper_open else ']'}"
        raise OptionError(f"{flag(name)}: must lie in {bounds}, got {value!r}")


def at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise OptionError(f"{flag(name)}: must be an integer >= {low}, got {value!r}")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(name: str, kind: str, value: Any) -> Any:
    """Turn a file or command-line value into the option's type, or raise :class:`OptionError`."""
    where = flag(name)
    if kind.endswith("?"):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        kind = kind[:-1]
    if kind.startswith("list["):
        inner = kind[5:-1]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    value = [v for v in text.strip("[]").split(",") if v.strip()]
            else:
                value = [v for v in text.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(name, inner, v) for v in value]
    if kind == "dict":
        if isinstance(value, str):
            value = _parse_mapping(value, where)
        if not isinstance(value, dict):
            raise OptionError(f"{where}: expected a mapping such as '{{\"width\": 16}}', got {value!r}")
        return dict(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise OptionError(f"{where}: expected true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise OptionError(f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        except (TypeError, ValueError, OverflowError):
            raise OptionError(f"{where}: expected an integer, got {value!r}") from None
    if kind == "float":
        if isinstance(value, bool):
            raise OptionError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"{where}: expected a number, got {value!r}") from None
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise OptionError(f"{where}: expected a string, got {value!r}")
        text = str(value).strip()
        return text.lower() if name in ("amp",) else text
    raise AssertionError(kind)


def _parse_mapping(text: str, where: str) -> dict:
    text = text.strip()
    if text.startswith("{"):
        try:
            import yaml

            value = yaml.safe_load(text)
        except Exception as error:  # yaml reports several error classes
            raise OptionError(f"{where}: cannot read {text!r} ({error})") from None
        return value
    import yaml

    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise OptionError(f"{where}: expected key=value pairs such as 'width=16,norm=bn-ln', got {text!r}")
        key, raw = part.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw.strip())
    return out


def load_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise OptionError(f"--config: no such file {path!r}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if path.endswith(".json"):
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except Exception as error:  # json/yaml parse errors
        raise OptionError(f"--config: cannot parse {path!r} ({error})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise OptionError(f"--config: {path!r} must hold a mapping of option names to values")
    return values

