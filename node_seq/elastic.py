"""Elastic depth: a trained model evaluated again under other solvers than it was trained with.

A model whose score holds when its step shrinks has learned a vector field; one whose score
collapses has learned its training grid. Translation (``benchmarks.elastic_depth``), language models
(``node_seq.fairseq.elastic_lm``) and images (``vision.evaluate``) ask this one question and differ
only in how a model is scored (BLEU, perplexity, accuracy) and how a solver reaches it (set on the
layers, or passed to ``fairseq-generate`` as overrides), so both are passed in; the loop, the
solver swap, the table and the plot live here once.
"""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from .ode import ODESolveError, SolverConfig, swap_solvers

Setting = TypeVar("Setting")
#: A table column: its header, and how a row's cell is written.
Column = tuple[str, Callable[[dict], str]]


@contextlib.contextmanager
def solver_swapped(layers: Sequence[Any], solver: SolverConfig) -> Iterator[None]:
    """Every layer's ``solver`` is ``solver`` (validated once) inside the block, its own again after."""
    previous = [layer.solver for layer in layers]
    solver = solver.validate()
    for layer in layers:
        layer.solver = solver
    try:
        yield
    finally:
        for layer, own in zip(layers, previous):
            layer.solver = own


def evaluate_settings(settings: Iterable[tuple[dict, Setting]], score: Callable[[Setting], dict], *,
                      failed: Sequence[str] | None = None, report: Callable[[dict], None] | None = None
                      ) -> list[dict]:
    """One row per ``(columns, setting)``: its columns, then ``score(setting)``.

    With ``failed`` (the score's keys), a setting whose solve fails (:class:`ODESolveError`, e.g. a
    tolerance the model cannot meet) is a row too: those keys ``None`` and the message under
    ``error`` (``None`` on the rows that succeeded); without, the error propagates. ``report`` sees
    each row as it is made (progress on a long sweep).
    """
    rows = []
    for columns, setting in settings:
        try:
            row = {**columns, **score(setting)}
            if failed is not None:
                row["error"] = None
        except ODESolveError as error:
            if failed is None:
                raise
            row = {**columns, **dict.fromkeys(failed), "error": str(error)}
        rows.append(row)
        if report is not None:
            report(row)
    return rows


def sweep(train: SolverConfig, methods: Sequence[str], factors: Sequence[float],
          score: Callable[[SolverConfig], dict], *, columns: Callable[[str, float, SolverConfig], dict] | None = None,
          failed: Sequence[str] | None = None) -> list[dict]:
    """``score`` under every solver of :func:`node_seq.ode.swap_solvers`: one row each, ``method``,
    ``factor`` and ``steps`` first (or ``columns(method, factor, solver)``); see :func:`evaluate_settings`."""
    columns = columns or (lambda method, factor, solver: {"method": method, "factor": factor, "steps": solver.steps})
    settings = ((columns(method, factor, solver), solver) for method, factor, solver in swap_solvers(train, methods, factors))
    return evaluate_settings(settings, score, failed=failed)


def csv_text(rows: Sequence[dict]) -> str:
    """The rows as CSV, one column per key of the first row (every row of a sweep has the same keys)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """The rows as a Markdown table, one cell per column."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def series(rows: Iterable[dict], *, by: str, x: str, y: str, label: str | None = None) -> dict[str, list[tuple]]:
    """Plot lines: one per value of ``row[by]``, through its ``(x, y)`` points (``(x, y, label)`` with
    ``label``); rows without an ``x`` or ``y`` (a failed solve, an adaptive row on a steps axis) are
    left out."""
    rows = list(rows)
    return {name: [(r[x], r[y], r[label]) if label else (r[x], r[y]) for r in rows
                   if r[by] == name and r[x] is not None and r[y] is not None]
            for name in dict.fromkeys(r[by] for r in rows)}
