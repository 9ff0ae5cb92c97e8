"""Plots of the memory measurements (``vision.memory``, ``benchmarks.memory``) and of perplexity against
NFE (``node_seq.fairseq.elastic_lm``).

Kept apart from :mod:`node_seq.memory` because it needs matplotlib, which only the ``vision``
extra (and ``all``) installs; the measuring itself needs nothing beyond torch.
"""

from __future__ import annotations


def plot(rows: list[dict], path: str, title: str, *, xlabel: str = "solver steps per ODE block",
         ylabel: str = "peak memory of one training step (MiB)", log_y: bool = False) -> None:
    """Peak memory (MiB) against steps, one line per gradient mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for gradient in dict.fromkeys(r["gradient"] for r in rows):
        points = [(r["steps"], r["peak_bytes"] / 2**20) for r in rows if r["gradient"] == gradient]
        ax.plot(*zip(*points), marker="o", label=gradient)
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both" if log_y else "major")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lines(series: dict[str, list[tuple[float, float]]], path: str, *, title: str, xlabel: str,
               ylabel: str) -> None:
    """One line per name of ``(x, y)`` points, e.g. perplexity against NFE per solver (``elastic_lm``)."""
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's runs leave the root logger at DEBUG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in series.items():
        ax.plot(*zip(*sorted(points)), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
