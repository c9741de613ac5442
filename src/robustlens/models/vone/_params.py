"""Sampling the Gabor parameters of a VOneBlock from macaque V1 distributions.

Spec: ``shared/specs/vonenet.md`` section 4 (Dapello, Marques et al. 2020, NeurIPS 33).
The histograms below are the empirical tables the reference implementation uses
(De Valois, Yund & Hepler 1982; De Valois, Albrecht & Thorell 1982; Ringach 2002).
Draws come from a private NumPy legacy ``RandomState(seed)`` in the reference's order,
so a seed reproduces the reference parameters exactly without touching global RNG state.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import norm

from robustlens.errors import ConfigError

__all__ = [
    "NX_NY_COUNTS",
    "NX_NY_LOG10_EDGES",
    "ORIENTATION_COUNTS",
    "ORIENTATION_EDGES",
    "SF_COUNTS",
    "SF_EDGES",
    "GaborParameters",
    "sample_gabor_parameters",
    "sf_histogram",
]

# Orientation (degrees): four 45-degree bins centred on 0, 45, 90, 135 (De Valois et al. 1982a).
ORIENTATION_EDGES = np.array([-22.5, 22.5, 67.5, 112.5, 157.5])
ORIENTATION_COUNTS = np.array([66.0, 49.0, 77.0, 54.0])
# Peak spatial frequency (cycles/degree), sampled in log2 space (De Valois et al. 1982b).
SF_EDGES = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0])
SF_COUNTS = np.array([4.0, 4.0, 8.0, 25.0, 32.0, 26.0, 28.0, 12.0])
# Joint (nx, ny) histogram, rows nx bins, columns ny bins, log10-spaced edges (Ringach 2002).
NX_NY_LOG10_EDGES = np.array([-1.0, -0.76, -0.52, -0.28, -0.04, 0.2])
NX_NY_COUNTS = np.array(
    [
        [2.0, 0.0, 1.0, 0.0, 0.0],
        [8.0, 9.0, 4.0, 1.0, 0.0],
        [1.0, 2.0, 19.0, 17.0, 3.0],
        [0.0, 0.0, 1.0, 7.0, 4.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


class GaborParameters(NamedTuple):
    """Per-filter Gabor parameters, one float64 array of length N per field.

    Attributes:
        sf: peak spatial frequency, cycles/degree.
        theta: orientation, degrees in [0, 180); 0 = horizontal stripes (carrier along rows).
        phase: carrier phase, degrees in [0, 360).
        nx: envelope s.d. along the carrier times sf (dimensionless).
        ny: envelope s.d. across the carrier times sf (dimensionless).
    """

    sf: np.ndarray
    theta: np.ndarray
    phase: np.ndarray
    nx: np.ndarray
    ny: np.ndarray


def _inverse_cdf(u: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Piecewise-linear inverse CDF of a histogram (spec 4.1), NumPy ``interp`` semantics.

    Args:
        u: values in [0, 1].
        counts: K bin counts (non-negative, positive sum).
        edges: K + 1 increasing bin edges in the sampling space.
    """
    p = counts / counts.sum()
    cdf = np.hstack(([0.0], np.cumsum(p)))
    return np.interp(u, cdf, edges)


def sf_histogram(sf_min: float = 0.0, sf_max: float = 9.0, strict_max: bool = False,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The spatial-frequency histogram truncated to [sf_min, sf_max] (spec 4.2).

    Args:
        sf_min: lowest kept edge is the smallest edge >= sf_min (cycles/degree).
        sf_max: highest kept edge is the largest edge <= sf_max (< sf_max if ``strict_max``).
        strict_max: the uniform-mode rule (strict inequality).

    Returns:
        ``(edges, counts)``: the kept edges (cycles/degree) and the counts between them.

    Raises:
        ConfigError: no bin is left.
    """
    lower = np.flatnonzero(SF_EDGES >= sf_min)
    upper = np.flatnonzero(SF_EDGES < sf_max if strict_max else SF_EDGES <= sf_max)
    if lower.size == 0 or upper.size == 0 or upper[-1] <= lower[0]:
        raise ConfigError(
            f"sf_min={sf_min} and sf_max={sf_max} leave no spatial-frequency bin: the histogram "
            f"edges are {SF_EDGES.tolist()} cycles/degree and at least one whole bin must lie in "
            "[sf_min, sf_max]. Use sf_min < 5.6 and sf_max >= 0.7 with sf_min < sf_max."
        )
    i_min, i_max = int(lower[0]), int(upper[-1])
    return SF_EDGES[i_min:i_max + 1].copy(), SF_COUNTS[i_min:i_max].copy()


def sample_gabor_parameters(
    n_channels: int,
    seed: int,
    sf_corr: float = 0.75,
    sf_max: float = 9.0,
    sf_min: float = 0.0,
    rand_param: bool = False,
) -> GaborParameters:
    """Sample Gabor parameters for ``n_channels`` filters (spec section 4).

    The stream is identical to the reference VOneNet's for the same seed: phase, orientation,
    then a bivariate normal (NumPy's legacy ``multivariate_normal``) whose normal CDF couples
    nx (column 0) and sf (column 1) through a Gaussian copula, then ny given nx's bin.
    In uniform mode (``rand_param=True``) phase, orientation, sf, nx and ny are five
    independent blocks of uniforms. Global NumPy state is never touched.

    Args:
        n_channels: number of filters N (simple + complex).
        seed: seed of the private legacy ``numpy.random.RandomState``.
        sf_corr: correlation of the Gaussian copula between nx and sf, in (-1, 1).
        sf_max: upper limit of the spatial-frequency histogram, cycles/degree.
        sf_min: lower limit of the spatial-frequency histogram, cycles/degree.
        rand_param: sample from uniform control distributions instead of the empirical ones.

    Returns:
        The five length-N float64 arrays sf (cycles/degree), theta (degrees), phase
        (degrees), nx and ny.

    Raises:
        ConfigError: invalid counts, seed, correlation or frequency range.
    """
    is_int = isinstance(n_channels, int | np.integer) and not isinstance(n_channels, bool)
    if not is_int or n_channels < 1:
        raise ConfigError(f"n_channels must be a positive integer; received {n_channels!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be an integer in [0, 2**32); received {seed!r}.")
    if not -1.0 < sf_corr < 1.0:
        raise ConfigError(f"sf_corr must lie in (-1, 1); received {sf_corr!r}.")
    n = int(n_channels)
    rng = np.random.RandomState(int(seed))  # noqa: NPY002  (legacy stream, by design)
    sf_edges, sf_counts = sf_histogram(sf_min, sf_max, strict_max=rand_param)
    phase = _inverse_cdf(rng.random_sample(n), np.array([1.0]), np.array([0.0, 360.0]))

    if rand_param:
        theta = _inverse_cdf(rng.random_sample(n), np.array([1.0]), np.array([0.0, 180.0]))
        sf = 2.0 ** _inverse_cdf(rng.random_sample(n), np.ones_like(sf_counts), np.log2(sf_edges))
        log_range = np.array([NX_NY_LOG10_EDGES[0], NX_NY_LOG10_EDGES[-1]])
        nx = 10.0 ** _inverse_cdf(rng.random_sample(n), np.array([1.0]), log_range)
        ny = 10.0 ** _inverse_cdf(rng.random_sample(n), np.array([1.0]), log_range)
        return GaborParameters(sf, theta, phase, nx, ny)

    theta = _inverse_cdf(rng.random_sample(n), ORIENTATION_COUNTS, ORIENTATION_EDGES)
    theta = np.where(theta < 0, theta + 180.0, theta)
    cov = np.array([[1.0, sf_corr], [sf_corr, 1.0]])
    z = rng.multivariate_normal(np.zeros(2), cov, n)
    p = norm.cdf(z)
    nx = 10.0 ** _inverse_cdf(p[:, 0], NX_NY_COUNTS.sum(axis=1), NX_NY_LOG10_EDGES)
    u_ny = rng.random_sample(n)
    linear_edges = 10.0 ** NX_NY_LOG10_EDGES
    # Bin of each nx: largest k with edge_k < nx.
    nx_bin = np.searchsorted(linear_edges, nx, side="left") - 1
    nx_bin = np.clip(nx_bin, 0, NX_NY_COUNTS.shape[0] - 1)
    ny = np.empty(n)
    for b in np.unique(nx_bin):
        rows = nx_bin == b
        ny[rows] = 10.0 ** _inverse_cdf(u_ny[rows], NX_NY_COUNTS[b], NX_NY_LOG10_EDGES)
    sf = 2.0 ** _inverse_cdf(p[:, 1], sf_counts, np.log2(sf_edges))
    return GaborParameters(sf, theta, phase, nx, ny)
