"""Train and evaluate an ODENet: ``python -m vision.train --config FILE [--option value ...]``.

Every option is checked before any work; a bad one stops the run with a message naming it and its
allowed values, and no output folder or checkpoint is created or touched. A run writes into
``--output-dir``:

* ``config.yaml``: the resolved configuration (file + command line), enough to rerun it;
* ``checkpoint_last.pt`` (each epoch) and ``checkpoint_best.pt`` (best validation accuracy, when
  there is a validation split): plain dicts loadable with ``torch.load(weights_only=True)``;
* ``metrics.json``: per epoch loss, accuracy, NFE forward/backward, solver and times; every step
  adaptation and refinement; the solver sweep if ``--eval-solvers true``;
* ``solver_sweep.{csv,json,png}`` with ``--eval-solvers true``.

``--resume`` continues from ``checkpoint_last.pt`` (or ``--resume PATH``); on the CPU with a fixed
grid it reproduces the uninterrupted run exactly (same batches, augmentation and parameters).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from node_seq.ode import OptionError, SolverConfig

from .adapt import StepAdapter, describe
from .checkpoint import load_checkpoint, save_checkpoint, write_text_atomic
from .config import TrainConfig, flag, load_config_file
from .data import DataError, Dataset, augment, batches, load_dataset
from .evaluate import evaluate, format_rows, solver_sweep, write_sweep
from .models import ODEClassifier, create_model, transfer_optimizer_state

CONFIG_FILE, LAST, BEST, METRICS = "config.yaml", "checkpoint_last.pt", "checkpoint_best.pt", "metrics.json"


# ---------------------------------------------------------------------------------------------
# command line and config
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file of options (command-line options override it)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help=f"continue from --output-dir/{LAST} (or from PATH)")
    choices = option_choices()
    for name, field in TrainConfig.fields().items():
        names = [flag(name)] + (["--" + name] if "_" in name else [])
        allowed = f"; one of {', '.join(choices[name])}" if name in choices else ""
        parser.add_argument(*names, dest=name, default=argparse.SUPPRESS,
                            metavar=field.metadata["kind"].rstrip("?").upper(),
                            help=f"{field.metadata['help']}{allowed} (default: {_default(field)})")
    return parser


def option_choices() -> dict[str, tuple[str, ...]]:
    from node_seq.ode import GRADIENTS

    from .config import DEVICES, LR_SCHEDULES, METHODS, OPTIMIZERS, PROGRESS
    from .data import DATASETS
    from .models import list_models

    return {"dataset": DATASETS, "model": tuple(list_models()), "method": METHODS, "gradient": GRADIENTS,
            "optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "device": DEVICES, "progress": PROGRESS}


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, str | None]:
    """The validated config and the checkpoint to resume from (``None`` for a fresh run)."""
    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "resume")}
    if args.config:
        values = load_config_file(args.config)
        source = args.config
    elif args.resume:
        run_dir = overrides.get("output_dir") or (os.path.dirname(args.resume) if isinstance(args.resume, str) else None)
        if not run_dir:
            raise OptionError("--resume: give --output-dir (or a checkpoint path) to find the run to continue")
        values = load_config_file(os.path.join(run_dir, CONFIG_FILE))
        values.setdefault("output_dir", run_dir)
        source = os.path.join(run_dir, CONFIG_FILE)
    else:
        raise OptionError("--config: required (a YAML/JSON file of options), unless resuming with --resume")
    config = TrainConfig.from_dict(values, source=source)
    config.update(overrides, source="command line")
    config.validate()

    resume = None
    last = os.path.join(config.output_dir, LAST)
    if args.resume:
        resume = args.resume if isinstance(args.resume, str) else last
        if not os.path.isfile(resume):
            raise OptionError(f"--resume: no checkpoint at {resume!r}")
    elif not config.overwrite and any(os.path.exists(os.path.join(config.output_dir, f))
                                      for f in (LAST, METRICS, CONFIG_FILE)):
        raise OptionError(f"{flag('output_dir')}: {config.output_dir!r} already holds a run; pass --resume to "
                          f"continue it, --overwrite true to replace it, or choose another folder")
    return config, resume


# ---------------------------------------------------------------------------------------------
# pieces of the loop
# ---------------------------------------------------------------------------------------------

def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of (1-based) ``epoch``: set each epoch, so nothing but the epoch is state."""
    if config.lr_schedule == "multistep":
        return config.lr * config.lr_gamma ** sum(epoch > m for m in config.lr_milestones)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.lr


def initialize_from(model: ODEClassifier, path: str) -> None:
    """Load weights from another run; a tied continuousnet (one piece) is untied to ``model``'s pieces."""
    state = load_checkpoint(path)
    source = create_model(state["model"]["name"], **state["model"]["kwargs"])
    source.load_state_dict(state["state_dict"])
    target_pieces = getattr(model, "pieces", None)
    if target_pieces is not None and getattr(source, "pieces", None) not in (None, target_pieces):
        ratios = {t // s for s, t in zip(source.pieces, target_pieces) if t % s == 0}
        if len(ratios) != 1 or any(t % s for s, t in zip(source.pieces, target_pieces)):
            raise OptionError(f"--init-from: cannot turn pieces {source.pieces} into {target_pieces}; each stage "
                              "must grow by the same whole factor")
        source.refine(ratios.pop())
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as error:
        raise OptionError(f"--init-from: {path!r} does not fit model {model.spec['name']!r}: "
                          f"{str(error).splitlines()[0]}") from None


class Progress:
    """tqdm on a terminal, plain lines otherwise (or when asked), nothing with ``none``."""

    def __init__(self, mode: str, total: int, epoch: int, epochs: int, interval: int):
        self.mode = mode if mode != "auto" else ("bar" if sys.stderr.isatty() else "plain")
        self.interval, self.total, self.prefix = interval, total, f"epoch {epoch}/{epochs}"
        self.bar = None
        if self.mode == "bar" and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.prefix, leave=False, dynamic_ncols=True)

    def update(self, i: int, loss: float, acc: float, nfe_f: float, nfe_b: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", nfe=f"{nfe_f:.0f}/{nfe_b:.0f}")
        elif self.mode == "plain" and (i % self.interval == 0 or i == self.total):
            print(f"{self.prefix} iter {i}/{self.total} loss {loss:.4f} acc {acc:.4f} "
                  f"nfe {nfe_f:.0f}/{nfe_b:.0f}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif self.mode != "none":
            print(text, flush=True)


@dataclasses.dataclass
class RunState:
    """Everything a checkpoint must hold for an exact resume, besides model and optimizer."""

    solver: SolverConfig
    epoch: int = 0
    iteration: int = 0
    best_val: float = -1.0


def train_epoch(model: ODEClassifier, dataset: Dataset, optimizer: torch.optim.Optimizer, config: TrainConfig,
                run: RunState, generator: torch.Generator, device: str, amp: bool, metrics: dict,
                adapter: StepAdapter | None, progress: Progress) -> dict:
    model.train()
    totals = {"loss": 0.0, "correct": 0, "n": 0, "nfe_f": 0, "nfe_b": 0, "batches": 0}
    adapt_set = dataset.val if dataset.val is not None else dataset.train.subset(
        torch.arange(min(config.adapt_samples, len(dataset.train))))

    def accuracy(solver: SolverConfig) -> tuple[float, int]:
        result = evaluate(model, dataset, adapt_set, batch_size=config.test_batch_size, device=device,
                          solver=solver, amp=amp)
        return result["accuracy"], int(result["nfe_forward"])

    for i, (x, y) in enumerate(batches(dataset.train, config.batch_size, shuffle=True, generator=generator), 1):
        x = dataset.prepare(x)
        if config.augment and x.dim() == 4 and (dataset.crop_padding or dataset.flip):
            x = augment(x, padding=dataset.crop_padding, flip=dataset.flip, generator=generator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x).float()
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats = model.solve_stats()  # read after backward: nfe_backward is filled in now
        run.iteration += 1
        totals["loss"] += float(loss.detach()) * len(y)
        totals["correct"] += int((logits.argmax(1) == y).sum())
        totals["n"] += len(y)
        totals["nfe_f"] += stats.nfe_forward
        totals["nfe_b"] += stats.nfe_backward
        totals["batches"] += 1
        if adapter is not None and run.iteration % config.adapt_interval == 0:
            solver, record = adapter.update(run.solver, accuracy)
            if record is not None:
                record = {"epoch": run.epoch + 1, "iteration": run.iteration, **record}
                metrics["adaptation"].append(record)
                progress.line(f"step adaptation @ iteration {run.iteration}: {record['action']} "
                              f"{record['old']} -> {record['new']} (accuracy {record['acc_train_solver']:.4f} "
                              f"vs reference {record['reference']} {record['acc_reference']:.4f})")
                run.solver = solver
                model.set_solver(solver)
        progress.update(i, totals["loss"] / totals["n"], totals["correct"] / totals["n"],
                        totals["nfe_f"] / totals["batches"], totals["nfe_b"] / totals["batches"])
    return {"train_loss": totals["loss"] / totals["n"], "train_acc": totals["correct"] / totals["n"],
            "nfe_forward": totals["nfe_f"] / totals["batches"], "nfe_backward": totals["nfe_b"] / totals["batches"]}


def checkpoint_state(model, optimizer, config, run, generator, metrics) -> dict:
    rng = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.spec, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "solver": dataclasses.asdict(run.solver), "epoch": run.epoch, "iteration": run.iteration,
            "best_val": run.best_val, "rng": rng, "config": config.to_dict(), "metrics": metrics}


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Console entry point; option and data errors exit with status 2 before any file is written."""
    try:
        return run(argv)
    except (OptionError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config, resume = resolve_config(args)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = config.resolved_device()
    amp = config.amp == "true" or (config.amp == "auto" and device == "cuda")
    checkpoint = load_checkpoint(resume) if resume else None

    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download_files=config.download,
                           data_seed=config.data_seed, val_fraction=config.val_fraction,
                           train_subset=config.train_subset, test_subset=config.test_subset,
                           n_train=config.n_train, n_test=config.n_test)
    torch.manual_seed(config.seed)
    if checkpoint is not None:
        model = create_model(checkpoint["model"]["name"], **checkpoint["model"]["kwargs"])
        model.load_state_dict(checkpoint["state_dict"])
        run_state = RunState(solver=SolverConfig(**checkpoint["solver"]), epoch=checkpoint["epoch"],
                             iteration=checkpoint["iteration"], best_val=checkpoint["best_val"])
    else:
        model = create_model(config.model, num_classes=dataset.num_classes, input_shape=dataset.input_shape,
                             **config.model_args)
        if config.init_from:
            initialize_from(model, config.init_from)
        run_state = RunState(solver=config.solver_config())
    model.set_solver(run_state.solver)
    model.to(device)
    optimizer = make_optimizer(config, model)
    generator = torch.Generator().manual_seed(config.seed)
    metrics = {"epochs": [], "adaptation": [], "refinements": []}
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        generator.set_state(checkpoint["rng"]["data"])
        if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        metrics = checkpoint["metrics"]
    adapter = StepAdapter(threshold=config.adapt_threshold, max_steps=config.adapt_max_steps,
                          growth=config.adapt_growth) if config.adapt_steps else None

    # every check has passed: only now touch the output folder
    os.makedirs(config.output_dir, exist_ok=True)
    import yaml

    write_text_atomic(os.path.join(config.output_dir, CONFIG_FILE), yaml.safe_dump(config.to_dict(), sort_keys=False))
    metrics["config"] = config.to_dict()
    params = sum(p.numel() for p in model.parameters())
    log = Progress(config.progress, 0, 0, 0, 1)
    log.line(f"{config.model} ({params} parameters) on {config.dataset} "
               f"({len(dataset.train)} train / {len(dataset.test)} test), {device}{' amp' if amp else ''}, "
               f"solver {describe(run_state.solver)}, gradient {run_state.solver.gradient}"
               + (f", resumed after epoch {run_state.epoch}" if checkpoint is not None else ""))

    started = time.perf_counter() - (metrics["epochs"][-1]["time_total"] if metrics["epochs"] else 0.0)
    for epoch in range(run_state.epoch + 1, config.epochs + 1):
        if epoch in config.refine_epochs:
            before = list(model.pieces)
            mapping = model.refine(2)
            transfer_optimizer_state(optimizer, model, mapping)
            if config.refine_steps and run_state.solver.is_fixed_grid:
                run_state.solver = dataclasses.replace(run_state.solver, steps=2 * (run_state.solver.steps or 1))
            model.set_solver(run_state.solver)
            metrics["refinements"].append({"epoch": epoch, "pieces_before": before, "pieces_after": model.pieces,
                                           "solver": describe(run_state.solver)})
            log.line(f"refinement before epoch {epoch}: pieces {before} -> {model.pieces}, "
                       f"solver {describe(run_state.solver)}")
        lr = learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        progress = Progress(config.progress, math.ceil(len(dataset.train) / config.batch_size), epoch,
                            config.epochs, config.log_interval)
        t0 = time.perf_counter()
        record = {"epoch": epoch, "lr": lr}
        record.update(train_epoch(model, dataset, optimizer, config, run_state, generator, device, amp, metrics,
                                  adapter, progress))
        progress.close()
        t1 = time.perf_counter()
        for name, split in (("val", dataset.val), ("test", dataset.test)):
            if split is not None:
                result = evaluate(model, dataset, split, batch_size=config.test_batch_size, device=device, amp=amp)
                record.update({f"{name}_loss": result["loss"], f"{name}_acc": result["accuracy"],
                               f"{name}_nfe_forward": result["nfe_forward"]})
        t2 = time.perf_counter()
        record.update({"solver": describe(run_state.solver), "steps": run_state.solver.steps,
                       "time_train": t1 - t0, "time_eval": t2 - t1, "time_total": t2 - started})
        if hasattr(model, "pieces"):
            record["pieces"] = list(model.pieces)
        metrics["epochs"].append(record)
        run_state.epoch = epoch
        log.line(f"epoch {epoch}/{config.epochs} train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
                   + (f" | val acc {record['val_acc']:.4f}" if "val_acc" in record else "")
                   + f" | test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f}"
                   f" | nfe {record['nfe_forward']:.0f}/{record['nfe_backward']:.0f} | {record['solver']}"
                   f" | {record['time_train']:.1f}s")
        improved = dataset.val is not None and record["val_acc"] > run_state.best_val
        if improved:
            run_state.best_val = record["val_acc"]
        state = checkpoint_state(model, optimizer, config, run_state, generator, metrics)
        save_checkpoint(state, os.path.join(config.output_dir, LAST))
        if improved:
            save_checkpoint(state, os.path.join(config.output_dir, BEST))
        write_metrics(config.output_dir, metrics)

    if config.eval_solvers:
        rows = solver_sweep(model, dataset, dataset.test, train_solver=run_state.solver,
                            methods=config.test_solver_list, factors=config.test_factor_list,
                            batch_size=config.test_batch_size, device=device, amp=amp)
        metrics["solver_sweep"] = rows
        write_sweep(rows, config.output_dir, title=os.path.basename(os.path.normpath(config.output_dir)),
                    train_steps=run_state.solver.steps)
        write_metrics(config.output_dir, metrics)
        log.line(format_rows(rows))
    return 0


def write_metrics(out_dir: str, metrics: dict) -> None:
    import json

    write_text_atomic(os.path.join(out_dir, METRICS), json.dumps(metrics, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
