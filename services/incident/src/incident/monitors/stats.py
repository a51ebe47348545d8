"""Drift statistics on fixed-bin histograms (numpy only; scipy is not in the lock).

The windows keep confidence as counts over ``N`` equal bins of [0, 1], so the statistics are
the binned forms, computed from the two count vectors:

- **PSI** ``sum((q - p) * ln(q / p))`` over bin shares ``p`` (reference) and ``q`` (current),
  each floored at ``eps`` so an empty bin does not make it infinite;
- **KS** the largest gap between the two cumulative distributions at the bin edges;
- **Wasserstein-1** with each bin's mass at its centre: ``width * sum(|P_i - Q_i|)`` over the
  cumulative shares of all but the last bin (the exact earth mover's distance between the two
  binned distributions).

Example::

    >>> round(psi([50, 50], [90, 10]), 4)
    0.8789
    >>> round(ks([50, 50], [90, 10]), 2)
    0.4
    >>> round(wasserstein([50, 50], [90, 10], width=0.5), 2)
    0.2
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

DEFAULT_EPS = 1e-4


def _shares(counts: Sequence[float]) -> NDArray[np.float64]:
    a: NDArray[np.float64] = np.asarray(counts, dtype=np.float64)
    total = float(a.sum())
    if total <= 0:
        raise ValueError("a histogram with no counts has no distribution")
    shares: NDArray[np.float64] = a / total
    return shares


def psi(reference: Sequence[float], current: Sequence[float], eps: float = DEFAULT_EPS) -> float:
    """Population stability index of ``current`` against ``reference``."""
    p = np.maximum(_shares(reference), eps)
    q = np.maximum(_shares(current), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: Sequence[float], current: Sequence[float]) -> float:
    """Kolmogorov-Smirnov distance between the binned distributions."""
    return float(np.max(np.abs(np.cumsum(_shares(reference)) - np.cumsum(_shares(current)))))


def wasserstein(reference: Sequence[float], current: Sequence[float], *, width: float) -> float:
    """Earth mover's distance between the binned distributions (bins ``width`` apart)."""
    gap = np.abs(np.cumsum(_shares(reference)) - np.cumsum(_shares(current)))[:-1]
    return float(width * np.sum(gap))


def mean_sd(n: float, total: float, total_sq: float) -> tuple[float, float]:
    """Mean and (population) standard deviation from a count, a sum and a sum of squares."""
    if n <= 0:
        raise ValueError("no observations")
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0)  # rounding can make it slightly negative
    return mean, math.sqrt(var)


def standardised_shift(
    ref: tuple[float, float, float], cur: tuple[float, float, float], *, floor: float = 1e-9
) -> float:
    """``|mean_cur - mean_ref| / sd_ref`` from ``(n, sum, sum_sq)`` of each window.

    The reference spread is floored at ``floor`` and at 1% of the reference mean, so a
    constant reference (a synthetic camera) does not turn any change into infinity."""
    ref_mean, ref_sd = mean_sd(*ref)
    cur_mean, _ = mean_sd(*cur)
    scale = max(ref_sd, floor, 0.01 * abs(ref_mean))
    return abs(cur_mean - ref_mean) / scale
