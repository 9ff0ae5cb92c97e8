"""Line plots for the measurements: peak memory against steps (``vision.memory``,
``benchmarks.memory``), perplexity or BLEU against NFE (``node_seq.fairseq.elastic_lm``,
``benchmarks.elastic_depth``), accuracy against test steps (``vision.evaluate``).

Kept apart from :mod:`node_seq.memory` because it needs matplotlib, which only the ``vision``
extra (and ``all``) installs; the measuring itself needs nothing beyond torch.
"""

from __future__ import annotations


def plot(rows: list[dict], path: str, title: str, *, xlabel: str = "solver steps per ODE block",
         ylabel: str = "peak memory of one training step (MiB)", log_y: bool = False) -> None:
    """Peak memory (MiB) against steps, one line per gradient mode."""
    series = {gradient: [(r["steps"], r["peak_bytes"] / 2**20) for r in rows if r["gradient"] == gradient]
              for gradient in dict.fromkeys(r["gradient"] for r in rows)}
    plot_lines(series, path, title=title, xlabel=xlabel, ylabel=ylabel, log_y=2 if log_y else None)


def plot_lines(series: dict[str, list[tuple]], path: str, *, title: str, xlabel: str, ylabel: str,
               log_x: int = 2, log_y: int | None = None, styles: dict[str, dict] | None = None,
               shaded_x: list[tuple[float, str]] = (), ylim: tuple[float, float] | None = None) -> None:
    """One line per name through its ``(x, y)`` points, or ``(x, y, label)`` points written beside
    each marker (e.g. the solver setting of each point); axes logarithmic in these bases.

    ``styles`` gives a line's matplotlib keywords by name (e.g. one colour per run, one dash per
    method); ``shaded_x`` marks ``(x, colour)`` with a broad vertical band (e.g. the training steps).
    The file is replaced at once, so a reader never sees half a PNG.
    """
    import logging
    import os
    import textwrap

    # before the import, which logs at DEBUG; fairseq's runs leave the root logger there
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in series.items():
        points = sorted(points)
        if not points:
            continue
        style = {"marker": "o", **(styles or {}).get(name, {})}
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, **style)
        for x, y, *label in points:
            if label:
                ax.annotate(label[0], (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    for x, colour in shaded_x:
        ax.axvline(x, color=colour, alpha=0.25, linewidth=4)
    ax.set_xscale("log", base=log_x)
    # plain numbers (3, 20), not powers (3 x 10^0); minor ticks labelled where matplotlib would
    ax.xaxis.set_major_formatter(LogFormatter(base=log_x))
    ax.xaxis.set_minor_formatter(LogFormatter(base=log_x, labelOnlyBase=False))
    if log_y:
        ax.set_yscale("log", base=log_y)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.legend(fontsize=7 if len(series) > 4 else None)
    fig.tight_layout()
    partial = f"{path}.partial.png"
    fig.savefig(partial, dpi=120)
    plt.close(fig)
    os.replace(partial, path)
