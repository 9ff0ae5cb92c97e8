"""The ODE core of node-seq: one ``solve`` for every model, with its options, errors and stats."""

from .config import (
    DEFAULT_FALLBACK as DEFAULT_FALLBACK,
    DEFAULT_SOLVER as DEFAULT_SOLVER,
    OptionError as OptionError,
    SolverConfig as SolverConfig,
    parse_time_points as parse_time_points,
    swap_solver as swap_solver,
    swap_solvers as swap_solvers,
)
from .adaptive import adaptive_loop as adaptive_loop
from .compiling import compile_settings as compile_settings
from .errors import (
    MaxStepsExceeded as MaxStepsExceeded,
    NonFiniteState as NonFiniteState,
    ODESolveError as ODESolveError,
    StepSizeUnderflow as StepSizeUnderflow,
)
from .methods import (
    ADAPTIVE_METHODS as ADAPTIVE_METHODS,
    FALLBACK_METHODS as FALLBACK_METHODS,
    FIXED_GRID_METHODS as FIXED_GRID_METHODS,
    GRADIENTS as GRADIENTS,
    LEARNED_METHODS as LEARNED_METHODS,
    METHODS as METHODS,
    REGISTRY as REGISTRY,
    MethodNames as MethodNames,
    MethodSpec as MethodSpec,
    register as register,
    registered as registered,
)
from .solve import solve as solve
from .stats import (
    SolveStats as SolveStats,
    Stage as Stage,
    current_stage as current_stage,
    evaluated_rows as evaluated_rows,
    in_backward_solve as in_backward_solve,
    observe_evaluations as observe_evaluations,
    stage_scope as stage_scope,
)
