"""The Gabor kernel (spec section 5) against the formula, evaluated independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustlens.errors import ConfigError
from robustlens.models.vone import gabor_bank, gabor_kernel, sample_gabor_parameters


def formula(f, sx, sy, theta, phase, k):
    """Pixel-by-pixel evaluation of spec section 5 in float64."""
    w = k // 2
    out = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            r, c = a - w, b - w
            xr = r * math.cos(theta) + c * math.sin(theta)
            yr = -r * math.sin(theta) + c * math.cos(theta)
            env = math.exp(-0.5 * (xr * xr / sx**2 + yr * yr / sy**2)) / (2 * math.pi * sx * sy)
            out[a, b] = env * math.cos(2 * math.pi * f * xr + phase)
    return out


@pytest.mark.parametrize(("k", "ppd", "seed"), [(7, 14.0, 0), (13, 37.5, 1), (25, 28.0, 2),
                                                (31, 9.3, 3)])
def test_kernel_matches_formula(k, ppd, seed):
    p = sample_gabor_parameters(6, seed=seed)
    for i in range(6):
        f = p.sf[i] / ppd
        args = (f, p.nx[i] / f, p.ny[i] / f, math.radians(p.theta[i]), math.radians(p.phase[i]))
        ours = gabor_kernel(*args, ksize=k)
        assert ours.dtype == torch.float32 and ours.shape == (k, k)
        expected = formula(*args, k)
        peak = np.abs(expected).max()
        assert np.abs(ours.double().numpy() - expected).max() <= 1e-6 * peak


def test_bank_equals_single_kernels():
    p = sample_gabor_parameters(5, seed=9)
    f = p.sf / 20.0
    th, ph = np.radians(p.theta), np.radians(p.phase)
    bank = gabor_bank(f, p.nx / f, p.ny / f, th, ph, 11)
    for i in range(5):
        assert torch.equal(bank[i], gabor_kernel(f[i], p.nx[i] / f[i], p.ny[i] / f[i], th[i],
                                                 ph[i], 11))


def test_orientation_convention():
    # theta = 0: the carrier varies along rows -> horizontal stripes (constant along a row).
    k = gabor_kernel(0.1, 100.0, 100.0, 0.0, 0.0, 9)
    assert torch.allclose(k[3], k[3, 0].expand(9), rtol=1e-3)
    assert not torch.allclose(k[:, 4], k[0, 4].expand(9), rtol=1e-3)
    # theta = 90 deg: vertical stripes (constant along a column).
    k90 = gabor_kernel(0.1, 100.0, 100.0, math.pi / 2, 0.0, 9)
    assert torch.allclose(k90[:, 3], k90[0, 3].expand(9), rtol=1e-3)
    # No zero-mean correction: an even-phase kernel has a DC response.
    assert float(gabor_kernel(0.05, 3.0, 3.0, 0.0, 0.0, 25).sum()) > 0.5


@pytest.mark.parametrize("k", [0, 4, 24, -3])
def test_even_or_invalid_ksize_rejected(k):
    with pytest.raises(ConfigError, match="odd"):
        gabor_kernel(0.1, 2.0, 2.0, 0.0, 0.0, k)


def test_nonpositive_sigma_rejected():
    with pytest.raises(ConfigError):
        gabor_kernel(0.1, 0.0, 2.0, 0.0, 0.0, 5)
