"""Perplexity and NFE of a fairseq LM checkpoint, and its elastic-depth sweep: other solvers, other steps.

Each ODE layer of a trained ``node_transformer_lm`` is re-run with every method in ``--methods`` at
step ``h_train / factor`` for every ``--factors`` entry (adaptive methods: tolerances ``tol /
factor``; :mod:`node_seq.elastic`, the sweep ``vision.evaluate`` runs on images). A
model whose perplexity holds when the step shrinks has learned a vector field; one whose
perplexity collapses has learned its training grid. A model trained with a learned block
(``rk2_gated``, ``pc``) swept with another method drops its learned coefficients, as
``benchmarks.elastic_depth`` does for translation; no model can be swept with a learned block it was
not trained with (it has no coefficients for it).

    python -m node_seq.fairseq.elastic_lm --checkpoint CK/checkpoint_best.pt --data DATA/bin \\
        --methods euler,midpoint,rk4,dopri5 --factors 0.5,1,2,4 --out OUT

writes ``OUT/elastic.csv``, ``OUT/elastic.md`` and ``OUT/elastic.png`` (perplexity against NFE,
one line per method). Perplexity is e to the mean token loss over ``--split`` (every sentence
after ``</s>``, as ``fairseq-eval-lm --sample-break-mode eos`` scores them; the tests check the
two agree), NFE the forward evaluations of all ODE layers per forward pass.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import elastic, significance
from ..nn.layers import collect_stats, node_layers
from ..ode import LEARNED_METHODS, METHODS, OptionError, SolverConfig


@torch.no_grad()
def evaluate(model, task, split: str, *, max_tokens: int = 4096, per_sample: bool = False) -> dict:
    """``loss`` (nats per token), ``perplexity``, ``nfe`` (per forward pass, averaged over batches),
    ``tokens``, ``tokens_per_second`` of ``model`` on ``split`` (loaded into ``task``); with
    ``per_sample``, also ``samples``: ``(loss, tokens)`` of each sample (a sentence under
    ``--sample-break-mode eos``) in the order of their ids, for a paired test of two models."""
    model.eval()
    dataset = task.dataset(split)
    batches = task.get_batch_iterator(dataset=dataset, max_tokens=max_tokens, ignore_invalid_inputs=False,
                                      num_workers=0).next_epoch_itr(shuffle=False)
    samples: dict[int, tuple[float, int]] = {}
    nfe, passes = 0, 0
    start = time.perf_counter()
    for sample in batches:
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
        target = sample["target"]
        keep = target.ne(task.target_dictionary.pad())
        token_loss = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).double().masked_fill(~keep, 0)
        for index, loss, tokens in zip(sample["id"].tolist(), token_loss.sum(-1).tolist(), keep.sum(-1).tolist()):
            samples[index] = (loss, tokens)
        nfe += collect_stats(model).nfe_forward
        passes += 1
    seconds = time.perf_counter() - start
    loss = sum(value for value, _ in samples.values())
    tokens = sum(count for _, count in samples.values())
    result = {"loss": loss / tokens, "perplexity": math.exp(loss / tokens), "nfe": nfe / max(passes, 1),
              "tokens": tokens, "tokens_per_second": tokens / seconds}
    if per_sample:
        result["samples"] = [samples[index] for index in sorted(samples)]
    return result


def loss_per_token(sums: np.ndarray) -> np.ndarray:
    """Loss per token from sums of ``(loss, tokens)`` (the log of the perplexity)."""
    return sums[..., 0] / sums[..., 1]


def paired_bootstrap(baseline: list[tuple[float, int]], system: list[tuple[float, int]], *,
                     resamples: int = 1000, seed: int = 12345) -> float:
    """p-value of the difference in perplexity of two models scored on the same samples
    (``evaluate(..., per_sample=True)["samples"]`` of each): :func:`node_seq.significance.paired_bootstrap`
    of their loss per token."""
    if len(baseline) != len(system) or [t for _, t in baseline] != [t for _, t in system]:
        raise ValueError("paired_bootstrap: the two models were not scored on the same samples")
    return significance.paired_bootstrap(baseline, system, loss_per_token, resamples=resamples, seed=seed)


def sweep(model, task, split: str, *, methods: list[str], factors: list[float], max_tokens: int = 4096) -> list[dict]:
    """One row per solver (:func:`node_seq.elastic.sweep`): its method, factor and steps, perplexity,
    NFE per forward pass."""
    layers = node_layers(model)
    if not layers:
        raise OptionError("--checkpoint: the model has no ODE layers (trained with --no-node-decoder): "
                          "nothing to sweep")
    trained: SolverConfig = layers[0].solver
    untrained = [m for m in methods if m in LEARNED_METHODS and m != trained.method]
    if untrained:
        raise OptionError(f"--methods: {untrained[0]!r} is a learned block and this model (trained with "
                          f"{trained.method!r}) has no coefficients for it; choose from "
                          f"{', '.join(m for m in METHODS if m not in LEARNED_METHODS or m == trained.method)}")

    def score(solver: SolverConfig) -> dict:
        with elastic.solver_swapped(layers, solver):
            return evaluate(model, task, split, max_tokens=max_tokens)

    def columns(method: str, factor: float, solver: SolverConfig) -> dict:
        return {"method": method, "factor": factor, "steps": solver.steps,
                "trained": method == trained.method and factor == 1}

    return elastic.sweep(trained, methods, factors, score, columns=columns)


#: The table's columns (``elastic.md``, ``benchmarks.multi30k_lm``).
COLUMNS: list[elastic.Column] = [
    ("method", lambda r: r["method"] + (" (trained)" if r["trained"] else "")),
    ("factor", lambda r: f"{r['factor']:g}"),
    ("steps", lambda r: "adaptive" if r["steps"] is None else str(r["steps"])),
    ("perplexity", lambda r: f"{r['perplexity']:.2f}"),
    ("NFE per forward pass", lambda r: f"{r['nfe']:.1f}"),
]


def format_rows(rows: list[dict]) -> str:
    return elastic.markdown(rows, COLUMNS)


def write(rows: list[dict], out: Path, *, title: str) -> None:
    """``elastic.csv``, ``elastic.md`` and, with matplotlib (the ``vision`` extra), ``elastic.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "elastic.csv").write_text(elastic.csv_text(rows), newline="")
    (out / "elastic.md").write_text(f"{title}\n\n{format_rows(rows)}\n")
    try:
        from ..plotting import plot_lines
    except ImportError:  # pragma: no cover (matplotlib missing)
        return
    plot_lines(elastic.series(rows, by="method", x="nfe", y="perplexity"), str(out / "elastic.png"), title=title,
               xlabel="NFE per forward pass (all ODE layers)", ylabel="perplexity")


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise OptionError(f"{option}: factors must be numbers > 0, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a fairseq node_transformer_lm checkpoint")
    parser.add_argument("--data", required=True, help="its fairseq data folder (dict.txt, SPLIT.bin)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--methods", default="euler,midpoint,rk4,dopri5", help="comma-separated")
    parser.add_argument("--factors", default="0.5,1,2,4", help="test step = train step / factor")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--out", required=True, help="folder for elastic.csv, elastic.md, elastic.png")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        methods = [m for m in args.methods.split(",") if m]
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise OptionError(f"--methods: unknown method {unknown[0] if unknown else args.methods!r}; choose from "
                              f"{', '.join(METHODS)}")
        factors = _floats(args.factors, "--factors")
        for name in ("checkpoint", "data"):
            if not Path(getattr(args, name)).exists():
                raise OptionError(f"--{name}: not found: {getattr(args, name)}")
    except OptionError as error:
        parser.error(str(error))
    from fairseq import checkpoint_utils

    from . import lm  # noqa: F401  (registers node_transformer_lm)

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data, "sample_break_mode": "eos"})
    task.load_dataset(args.split)
    try:
        rows = sweep(models[0], task, args.split, methods=methods, factors=factors, max_tokens=args.max_tokens)
    except OptionError as error:
        parser.error(str(error))
    write(rows, Path(args.out), title=args.title or f"{args.checkpoint} ({args.split})")
    print(format_rows(rows))


if __name__ == "__main__":
    main()
