"""Evaluation, and the solver-swap sweep: is what the model learned an ODE, or a discrete map?

A model trained with a step ``h`` is tested with every method in ``test_solver_list`` and every
factor in ``test_factor_list`` at step ``h / factor`` (``factor`` times as many steps; the original
"ResNet After All?" code computed ``1 / (h * factor)``, right only for ``h = 1``). Adaptive test
solvers use tolerances ``tol / factor``. A model whose accuracy holds when the step shrinks has
learned a vector field; one whose accuracy collapses has learned the discretization.

Run on a finished training run::

    python -m vision.evaluate --run-dir runs/spheres2-coarse --test-factor-list 0.5,1,2,4,8
    python -m vision.evaluate --plot out.png --sweep runs/a/solver_sweep.json:coarse runs/b/solver_sweep.json:fine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from node_seq import elastic
from node_seq.ode import OptionError, SolverConfig

from .checkpoint import load_checkpoint, write_text_atomic
from .data import Dataset, Split, batches


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, split: Split, *, batch_size: int = 512,
             device: str | torch.device = "cpu", solver: SolverConfig | None = None, amp: bool = False) -> dict:
    """Accuracy and loss over the whole split (counted per example), and mean forward NFE per batch."""
    was_training = model.training
    model.eval()
    correct, loss, nfe, num_batches = 0, 0.0, 0, 0
    try:
        with elastic.solver_swapped(model.ode_blocks(), solver) if solver is not None else contextlib.nullcontext():
            for x, y in batches(split, batch_size, shuffle=False):
                x, y = dataset.prepare(x).to(device), y.to(device)
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x).float()
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                nfe += model.solve_stats().nfe_forward
                num_batches += 1
    finally:
        model.train(was_training)
    n = len(split)
    return {"accuracy": correct / n, "loss": loss / n, "nfe_forward": nfe / max(1, num_batches)}


def solver_sweep(model: torch.nn.Module, dataset: Dataset, split: Split, *, train_solver: SolverConfig,
                 methods, factors, batch_size: int = 512, device="cpu", amp: bool = False) -> list[dict]:
    """One row per solver (:func:`node_seq.elastic.sweep`): accuracy, loss and forward NFE per batch;
    a solve that fails is a row with its error."""
    def score(solver: SolverConfig) -> dict:
        return evaluate(model, dataset, split, batch_size=batch_size, device=device, solver=solver, amp=amp)

    def columns(method: str, factor: float, solver: SolverConfig) -> dict:
        return {"method": method, "factor": factor, "steps": solver.steps,
                "step_size": 1.0 / solver.steps if solver.steps else None,
                "rtol": None if solver.steps else solver.rtol, "atol": None if solver.steps else solver.atol}

    return elastic.sweep(train_solver, methods, factors, score, columns=columns,
                         failed=("accuracy", "loss", "nfe_forward"))


def write_sweep(rows: list[dict], out_dir: str, *, title: str = "", train_steps: int | None = None,
                prefix: str = "solver_sweep") -> dict[str, str]:
    """``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.png`` in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{prefix}.{ext}") for ext in ("csv", "json", "png")}
    write_text_atomic(paths["csv"], elastic.csv_text(rows))
    write_text_atomic(paths["json"], json.dumps({"title": title, "train_steps": train_steps, "rows": rows},
                                                indent=2))
    plot_sweeps({title or "model": (rows, train_steps)}, paths["png"], title=title)
    return paths


def plot_sweeps(sweeps: dict[str, tuple[list[dict], int | None]], path: str, *, title: str = "") -> None:
    """Accuracy against the number of test steps (per block): one colour per run, one dash per method,
    each run's training steps shaded."""
    from node_seq.plotting import plot_lines

    series, styles, shaded = {}, {}, []
    dashes = {}  # one line style per method, shared by the runs
    for i, (label, (rows, train_steps)) in enumerate(sweeps.items()):
        by_method = elastic.series(rows, by="method", x="steps", y="accuracy")
        for method in dict.fromkeys(r["method"] for r in rows if r["steps"]):
            name = f"{label}: {method}"
            series[name] = sorted(by_method[method])
            dash = dashes.setdefault(method, ["-", "--", ":", "-."][len(dashes) % 4])
            styles[name] = {"color": f"C{i}", "linestyle": dash, "markersize": 3}
        if train_steps:
            shaded.append((train_steps, f"C{i}"))
    plot_lines(series, path, title=title, xlabel="test steps over [0, 1] (shaded: training steps)",
               ylabel="test accuracy", styles=styles, shaded_x=shaded, ylim=(0, 1.02))


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def load_run(run_dir: str, checkpoint: str = "last"):
    """``(model, dataset, config, solver)`` of a finished run, from its folder alone."""
    from .config import TrainConfig
    from .data import load_dataset
    from .models import create_model

    path = checkpoint if os.path.isfile(checkpoint) else os.path.join(run_dir, f"checkpoint_{checkpoint}.pt")
    state = load_checkpoint(path)
    config = TrainConfig.from_dict(state["config"], source=path)
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, data_seed=config.data_seed,
                           val_fraction=config.val_fraction, train_subset=config.train_subset,
                           test_subset=config.test_subset, n_train=config.n_train, n_test=config.n_test)
    model = create_model(state["model"]["name"], **state["model"]["kwargs"])
    model.load_state_dict(state["state_dict"])
    solver = SolverConfig(**state["solver"])
    model.set_solver(solver)
    return model, dataset, config, solver


def main(argv=None) -> int:
    from .config import METHODS, coerce

    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", help="a training run's output folder")
    parser.add_argument("--checkpoint", default="last", help="last, best, or a checkpoint path")
    parser.add_argument("--test-solver-list", default=None, help="e.g. euler,midpoint,rk4 (default: the run's)")
    parser.add_argument("--test-factor-list", default=None, help="e.g. 0.5,1,2 (default: the run's)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"))
    parser.add_argument("--out-dir", default=None, help="where to write the sweep (default: --run-dir)")
    parser.add_argument("--prefix", default="solver_sweep")
    parser.add_argument("--plot", default=None, help="combine sweeps into one PNG at this path")
    parser.add_argument("--sweep", nargs="*", default=[], help="solver_sweep.json[:label] files for --plot")
    parser.add_argument("--title", default="")
    parser.add_argument("--methods", default=None, help="with --plot: only these methods, e.g. euler,rk4")
    args = parser.parse_args(argv)
    try:
        if args.plot:
            sweeps = {}
            for item in args.sweep:
                file, _, label = item.partition(":")
                with open(file, encoding="utf-8") as f:
                    table = json.load(f)
                rows = [r for r in table["rows"] if not args.methods or r["method"] in args.methods.split(",")]
                sweeps[label or file] = (rows, table.get("train_steps"))
            if not sweeps:
                raise OptionError("--sweep: give at least one solver_sweep.json to plot")
            plot_sweeps(sweeps, args.plot, title=args.title)
            print(f"wrote {args.plot}")
            return 0
        if not args.run_dir:
            raise OptionError("--run-dir: required (or use --plot with --sweep)")
        model, dataset, config, solver = load_run(args.run_dir, args.checkpoint)
        methods = coerce("test_solver_list", "list[str]", args.test_solver_list) if args.test_solver_list \
            else config.test_solver_list
        factors = coerce("test_factor_list", "list[float]", args.test_factor_list) if args.test_factor_list \
            else config.test_factor_list
        for m in methods:
            if m not in METHODS:
                raise OptionError(f"--test-solver-list: unknown method {m!r}; choose one of {', '.join(METHODS)}")
        if any(not (math.isfinite(f) and f > 0) for f in factors):
            raise OptionError(f"--test-factor-list: factors must be numbers > 0, got {factors!r}")
        split = {"test": dataset.test, "val": dataset.val, "train": dataset.train}[args.split]
        if split is None:
            raise OptionError("--split: this run has no validation split")
        rows = solver_sweep(model, dataset, split, train_solver=solver, methods=methods, factors=factors,
                            batch_size=config.test_batch_size)
    except OptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = write_sweep(rows, args.out_dir or args.run_dir, title=args.title or os.path.basename(args.run_dir.rstrip("/")),
                        train_steps=solver.steps, prefix=args.prefix)
    print(format_rows(rows))
    print("wrote " + ", ".join(paths.values()))
    return 0


#: The table's columns (printed by this command and by ``vision.train``).
COLUMNS: list[elastic.Column] = [
    ("method", lambda r: r["method"]),
    ("factor", lambda r: f"{r['factor']:g}"),
    ("steps", lambda r: str(r["steps"]) if r["steps"] else f"tol {r['rtol']:.1e}"),
    ("accuracy", lambda r: "failed" if r["accuracy"] is None else f"{r['accuracy']:.4f}"),
    ("NFE/batch", lambda r: "" if r["nfe_forward"] is None else f"{r['nfe_forward']:.0f}"),
]


def format_rows(rows: list[dict]) -> str:
    return elastic.markdown(rows, COLUMNS)


if __name__ == "__main__":
    raise SystemExit(main())
