"""Percentile bootstrap confidence intervals (shared by RSA and the manifold analysis)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustlens.errors import RobustlensError

__all__ = ["BootstrapEstimate", "check_confidence", "percentile_interval"]


@dataclass(frozen=True)
class BootstrapEstimate:
    """A statistic on the full sample with a percentile bootstrap confidence interval.

    Attributes:
        estimate: the statistic on the full sample.
        low: the interval's lower bound (NaN if no bootstrap sample was defined).
        high: the interval's upper bound (NaN likewise).
        std: standard deviation of the bootstrap samples (the bootstrap standard error).
        confidence: the interval's level, e.g. 0.95.
        samples: (n_bootstrap,) the statistic on each resample (NaN where undefined).
    """

    estimate: float
    low: float
    high: float
    std: float
    confidence: float
    samples: np.ndarray


def check_confidence(confidence: float, n_bootstrap: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise RobustlensError(f"confidence must lie in (0, 1); received {confidence}.")
    if n_bootstrap < 1:
        raise RobustlensError(f"n_bootstrap must be >= 1; received {n_bootstrap}.")


def percentile_interval(estimate: float, samples: np.ndarray, confidence: float
                        ) -> BootstrapEstimate:
    """Wrap bootstrap ``samples`` of a statistic into a :class:`BootstrapEstimate`."""
    samples = np.asarray(samples, dtype=np.float64)
    ok = samples[np.isfinite(samples)]
    if ok.size == 0:
        return BootstrapEstimate(float(estimate), math.nan, math.nan, math.nan, confidence, samples)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ok, [alpha, 1.0 - alpha])
    std = float(ok.std(ddof=1)) if ok.size > 1 else math.nan
    return BootstrapEstimate(float(estimate), float(low), float(high), std, confidence, samples)
