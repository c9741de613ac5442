"""The L1 threat model: the exact projection onto the L1 ball and the box, the random start."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from robustlens.attacks import PGD, perturbation_norm, project_l1
from robustlens.attacks._threat import random_start


def _reference(u: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    # min ||d - u||^2 s.t. ||d||_1 <= eps, 0 <= x + d <= 1: soft threshold by lam, clip to the
    # box; lam found by a root finder (an independent route to the sorting-based solution)
    cap = np.where(u >= 0, 1 - x, x)

    def f(lam: float) -> float:
        return np.minimum(np.maximum(np.abs(u) - lam, 0), cap).sum() - eps

    lam = 0.0 if f(0.0) <= 0 else brentq(f, 0.0, np.abs(u).max(), xtol=1e-14)
    return np.sign(u) * np.minimum(np.maximum(np.abs(u) - lam, 0), cap)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_matches_a_reference(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 2, 5, 5, generator=g, dtype=torch.float64)
    x[0] = x[0].round()  # a binary image: the box binds on every pixel
    u = 0.6 * torch.randn(6, 2, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.5, 1.0, 3.0, 100.0, 0.0, 7.0], dtype=torch.float64).view(-1, 1, 1, 1)
    d = project_l1(u, x, eps)
    for i in range(6):
        ref = _reference(u[i].flatten().numpy(), x[i].flatten().numpy(), float(eps[i]))
        np.testing.assert_allclose(d[i].flatten().numpy(), ref, atol=1e-9)
    assert bool((perturbation_norm(d, "1") <= eps.flatten() + 1e-9).all())
    assert float((x + d).min()) >= 0 and float((x + d).max()) <= 1
    torch.testing.assert_close(project_l1(d, x, eps), d)  # a projection is idempotent


def test_random_start_fills_the_l1_ball():
    x = torch.full((2000, 1, 3, 3), 0.5)
    start = random_start(x, 1.0, "1", torch.Generator().manual_seed(0))
    n = perturbation_norm(start - x, "1")
    assert float(n.max()) <= 1.0 + 1e-6
    # uniform in a d-dimensional ball: P(||delta|| <= r) = r^d, here d = 9
    assert abs(float((n <= 0.9).float().mean()) - 0.9 ** 9) < 0.04


def test_l1_pgd_moves_a_sparse_set_of_pixels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(400, 3))
    x = 0.25 + 0.5 * torch.rand(4, 1, 20, 20)
    y = torch.zeros(4, dtype=torch.long)
    adv = PGD(1.0, steps=1, step_size=1.0, norm="1", random_start=False)(model, x, y)
    moved = ((adv - x).abs() > 1e-7).flatten(1).sum(1)
    assert bool((moved == 20).all())  # 5% of 400 pixels
    torch.testing.assert_close(perturbation_norm(adv - x, "1"), torch.ones(4), atol=1e-4, rtol=0)
