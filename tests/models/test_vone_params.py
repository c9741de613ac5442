"""Gabor parameter sampling (spec section 4) against the published histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from robustlens.errors import ConfigError
from robustlens.models.vone import sample_gabor_parameters
from robustlens.models.vone._params import sf_histogram

DATA = json.loads((Path(__file__).parent / "data" / "v1_parameter_distributions.json").read_text())
FIELDS = DATA["fields"]
N = 20_000  # filters for the statistical checks (fast: vectorised)


@pytest.fixture(scope="module")
def params():
    return sample_gabor_parameters(N, seed=123)


def _chi2(values: np.ndarray, edges: list[float], probabilities: list[float]) -> float:
    observed, _ = np.histogram(values, bins=np.asarray(edges))
    p = np.asarray(probabilities, dtype=float)
    keep = p > 0
    assert observed[~keep].sum() == 0, "values fell into an empty bin"
    expected = p[keep] / p[keep].sum() * observed[keep].sum()
    return float(chisquare(observed[keep], expected).pvalue)


def test_sanity_values_of_seed_0():
    p = sample_gabor_parameters(512, seed=0)
    first = [float(a[0]) for a in p]
    assert first == pytest.approx([2.215166, 106.693242, 197.572861, 0.269823, 0.479184], abs=1e-6)
    assert (p.sf.min(), p.sf.max()) == pytest.approx((0.511, 7.969), abs=1e-3)
    assert (p.nx.min(), p.nx.max()) == pytest.approx((0.102, 0.908), abs=1e-3)
    assert (p.ny.min(), p.ny.max()) == pytest.approx((0.100, 1.585), abs=1e-3)
    sigma_x = p.nx / (p.sf / 28.0)
    assert (sigma_x.min(), sigma_x.max()) == pytest.approx((1.3, 11.0), abs=0.06)


def test_identical_stream_and_no_global_state():
    np.random.seed(7)  # noqa: NPY002
    before = np.random.get_state()  # noqa: NPY002
    a = sample_gabor_parameters(64, seed=5)
    b = sample_gabor_parameters(64, seed=5)
    after = np.random.get_state()  # noqa: NPY002
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.sf, sample_gabor_parameters(64, seed=6).sf)


def test_first_draws_are_the_legacy_uniform_stream():
    p = sample_gabor_parameters(10, seed=3)
    rs = np.random.RandomState(3)  # noqa: NPY002
    assert np.allclose(p.phase, 360.0 * rs.random_sample(10), rtol=0, atol=1e-12)


def test_orientation_histogram(params):
    f = FIELDS["orientation"]
    wrapped = np.where(params.theta >= 157.5, params.theta - 180.0, params.theta)
    assert _chi2(wrapped, f["bin_edges"], f["probabilities"]) > 1e-3
    assert params.theta.min() >= 0 and params.theta.max() < 180


def test_spatial_frequency_histogram(params):
    f = FIELDS["peak_spatial_frequency"]
    assert _chi2(params.sf, f["bin_edges"], f["probabilities"]) > 1e-3
    assert params.sf.min() >= 0.5 and params.sf.max() < 8.0


def test_nx_marginal_and_ny_conditionals(params):
    f = FIELDS["nx_ny_joint"]
    edges = f["bin_edges"]
    assert _chi2(params.nx, edges, f["nx_marginal_probabilities"]) > 1e-3
    nx_bin = np.digitize(params.nx, edges) - 1
    for b, probabilities in enumerate(f["ny_given_nx_bin_probabilities"]):
        rows = nx_bin == b
        if probabilities is None:
            assert not rows.any()
            continue
        assert _chi2(params.ny[rows], edges, probabilities) > 1e-3


def test_phase_uniform(params):
    assert _chi2(params.phase, list(np.linspace(0, 360, 9)), [1 / 8] * 8) > 1e-3


def test_sf_nx_copula_correlation(params):
    from scipy.stats import spearmanr

    rho = spearmanr(params.sf, params.nx).statistic
    # Spearman of a Gaussian copula with Pearson 0.75 is 6/pi asin(0.375) ~ 0.73.
    assert rho == pytest.approx(6 / np.pi * np.arcsin(0.75 / 2), abs=0.03)


def test_sf_max_6_drops_the_last_bin():
    edges, counts = sf_histogram(0.0, 6.0)
    assert edges[-1] == 5.6 and len(counts) == 7
    p = sample_gabor_parameters(2000, seed=0, sf_max=6)
    assert p.sf.max() < 5.6
    # Truncation is a renormalised histogram, checked by chi-square too.
    probs = counts / counts.sum()
    assert _chi2(p.sf, list(edges), list(probs)) > 1e-3
    # In uniform mode the rule is strict: sf_max = 8 keeps edges < 8.
    assert sf_histogram(0.0, 8.0, strict_max=True)[0][-1] == 5.6
    assert sf_histogram(0.0, 8.0)[0][-1] == 8.0


def test_uniform_mode_ranges():
    p = sample_gabor_parameters(5000, seed=1, rand_param=True)
    assert p.theta.min() >= 0 and p.theta.max() < 180
    assert p.sf.min() >= 0.5 and p.sf.max() < 8.0
    for v in (p.nx, p.ny):
        assert v.min() >= 0.1 and v.max() < 10**0.2
    # log-uniform sf: the fraction below 2 cpd is log(4)/log(16) = 1/2.
    assert np.mean(p.sf < 2.0) == pytest.approx(0.5, abs=0.03)
    # No copula: nx and sf uncorrelated.
    assert abs(np.corrcoef(np.log(p.sf), np.log(p.nx))[0, 1]) < 0.05


@pytest.mark.parametrize("kwargs", [
    {"n_channels": 0, "seed": 0}, {"n_channels": 4, "seed": -1},
    {"n_channels": 4, "seed": 0, "sf_corr": 1.0}, {"n_channels": 4, "seed": 0, "sf_max": 0.3},
    {"n_channels": 4, "seed": 0, "sf_min": 8.5},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ConfigError):
        sample_gabor_parameters(**kwargs)
