"""The paired bootstrap: is one model better than another on the same samples, or only lucky?

One procedure for every corpus-level score that is a function of per-sample sums (perplexity from
each sentence's loss and tokens, accuracy from each example's hit): the caller passes the samples'
statistics and the function that makes the score from their sums. BLEU and chrF2 are tested with
sacreBLEU's own paired bootstrap (``benchmarks.quality_records``): their per-sentence statistics are
not part of sacreBLEU's public interface, and its p-values are the ones other papers report.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def paired_bootstrap(baseline: Sequence[Sequence[float]], system: Sequence[Sequence[float]],
                     statistic: Callable[[np.ndarray], np.ndarray], *, resamples: int = 1000,
                     seed: int = 12345) -> float:
    """p-value of the difference in ``statistic`` between two systems scored on the same samples.

    ``baseline[i]`` and ``system[i]`` are the statistics of sample ``i`` (e.g. ``(loss, tokens)``);
    ``statistic`` maps sums over samples, shape ``(..., k)``, to scores, shape ``(...)``. The
    samples are resampled with replacement, the same draw for both systems, as sacreBLEU resamples
    sentences; p is the share of resampled differences at least as far from their mean as the
    observed difference is from zero, with one added to both counts (two systems that do not differ
    get p = 1).
    """
    base, other = np.asarray(baseline, dtype=np.float64), np.asarray(system, dtype=np.float64)
    if base.shape != other.shape or base.ndim != 2:
        raise ValueError(f"paired_bootstrap: the two systems were not scored on the same samples "
                         f"(statistics of shape {base.shape} and {other.shape})")
    draws = np.random.default_rng(seed).integers(0, len(base), size=(resamples, len(base)))
    deltas = statistic(other[draws].sum(1)) - statistic(base[draws].sum(1))
    observed = statistic(other.sum(0)) - statistic(base.sum(0))
    return float((1 + np.sum(np.abs(deltas - deltas.mean()) >= abs(observed))) / (resamples + 1))
