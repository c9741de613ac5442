"""Correlating two per-item quantities, with p-values and bootstrap intervals.

Study S3 asks whether classes with lower-dimensional activation manifolds are more robust:
one value per class on each side (manifold dimension, per-class robust accuracy).
:func:`correlate` gives Pearson's r and Spearman's rho with their p-values (from scipy) and
percentile bootstrap confidence intervals over items (resampled in pairs);
:func:`correlate_tables` does it for every group of two tidy tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from robustlens.analysis._bootstrap import check_confidence, percentile_interval
from robustlens.errors import RobustlensError

__all__ = ["CORRELATION_COLUMNS", "correlate", "correlate_tables"]

CORRELATION_COLUMNS = ["method", "n", "statistic", "p_value", "ci_low", "ci_high", "confidence"]


def _statistic(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = scipy.stats.pearsonr(x, y) if method == "pearson" else scipy.stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def correlate(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
              n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Pearson and Spearman correlation of paired values, with bootstrap intervals.

    Args:
        x: (n,) values (e.g. per-class manifold dimension); pairs with a NaN on either
            side are dropped.
        y: (n,) the paired values (e.g. per-class robust accuracy).
        n_bootstrap: resamples of the pairs (with replacement).
        confidence: level of the percentile intervals.
        seed: seed of the resampling (a private ``numpy`` generator).

    Returns:
        Two rows (``pearson``, ``spearman``) with columns ``method, n, statistic, p_value,
        ci_low, ci_high, confidence``; NaN where undefined (fewer than 3 pairs, or a
        constant side).
    """
    check_confidence(confidence, n_bootstrap)
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise RobustlensError(f"x and y must be paired 1-D sequences; received shapes {xa.shape} "
                              f"and {ya.shape}.")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = len(xa)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((n_bootstrap, 0), int)
    rows = []
    for method in ("pearson", "spearman"):
        stat, p = _statistic(xa, ya, method)
        samples = np.array([_statistic(xa[d], ya[d], method)[0] for d in draws]) if n >= 3 \
            else np.full(n_bootstrap, math.nan)
        est = percentile_interval(stat, samples, confidence)
        rows.append({"method": method, "n": n, "statistic": stat, "p_value": p,
                     "ci_low": est.low, "ci_high": est.high, "confidence": confidence})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlate_tables(left: pd.DataFrame, right: pd.DataFrame, x: str, y: str, *,
                     on: Sequence[str] = ("class",), by: Sequence[str] | None = None,
                     n_bootstrap: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> pd.DataFrame:
    """:func:`correlate` column ``x`` of ``left`` with column ``y`` of ``right`` per group.

    Args:
        left: a tidy table, e.g. :meth:`ClassManifolds.result` rows.
        right: a tidy table, e.g. per-class robust accuracy rows.
        x: the value column of ``left``.
        y: the value column of ``right``.
        on: columns identifying an item in both tables (default: ``class``).
        by: grouping columns; default: those of ``model``, ``layer``, ``attack``, ``eps``
            and ``threshold`` present in either table. Those present in both are merge keys
            as well as ``on``.

    Returns:
        One row per group and method: the group columns then :data:`CORRELATION_COLUMNS`.
    """
    for table, col, name in ((left, x, "left"), (right, y, "right")):
        missing = {col, *on} - set(table.columns)
        if missing:
            raise RobustlensError(f"the {name} table lacks columns {sorted(missing)}.")
    keys = list(by) if by is not None else ["model", "layer", "attack", "eps", "threshold"]
    shared = [c for c in keys if c in left.columns and c in right.columns and c not in on]
    only_right = [c for c in keys if c in right.columns and c not in left.columns and c not in on]
    merged = left.merge(right[[*on, *shared, *only_right, y]], on=[*on, *shared],
                        suffixes=("", "_right"))
    y_col = f"{y}_right" if y in left.columns and y not in (*on, *shared) else y
    groups = [c for c in keys if c in merged.columns]
    if by is not None and len(groups) != len(keys):
        raise RobustlensError(f"grouping columns {sorted(set(keys) - set(groups))} are in "
                              "neither table.")
    frames = []
    grouped = merged.groupby(groups, sort=False, dropna=False) if groups else [((), merged)]
    for key, part in grouped:
        df = correlate(part[x].to_numpy(), part[y_col].to_numpy(), n_bootstrap=n_bootstrap,
                       confidence=confidence, seed=seed)
        values = key if isinstance(key, tuple) else (key,)
        for col, value in reversed(list(zip(groups, values, strict=True))):
            df.insert(0, col, value)
        frames.append(df)
    cols = [*groups, *CORRELATION_COLUMNS]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
