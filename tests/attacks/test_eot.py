"""Expectation over transformation: the averaged gradient, batched or chunked; the warning."""

import warnings

import pytest
import torch
from _attack_models import Affine, NoisyAffine, affine_problem

from robustlens.attacks import (
    PGD,
    Criterion,
    DeepFool,
    EotPlan,
    FixedNoise,
    StochasticModelWarning,
    criterion_gradient,
    is_stochastic,
)


@pytest.mark.parametrize("chunk", [None, 7])
def test_eot_gradient_equals_its_analytic_expectation(chunk):
    # logits = W (x * (1 + s n)); margin loss of a 2-class model is linear in the logits:
    # grad = (w_other - w_y) * (1 + s n)  ->  expectation (w_other - w_y)
    torch.manual_seed(0)
    w = torch.randn(2, 16)
    model = NoisyAffine(w, sigma=0.5)
    x = torch.full((3, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1, 0])
    k = 4000
    grad, logits, _ = criterion_gradient(model, x, Criterion(y, loss="margin"),
                                      EotPlan.create(k, chunk))
    expected = (w[1 - y] - w[y]).view(3, 1, 4, 4)
    # each coordinate averages k samples of std 0.5 * |expected|: allow 5 standard errors
    tol = 5 * 0.5 * expected.abs() / k ** 0.5 + 1e-6
    assert bool(((grad - expected).abs() <= tol).all())
    torch.testing.assert_close(logits, x.flatten(1) @ w.T, atol=0.05, rtol=0)


def test_eot_of_a_deterministic_model_is_the_plain_gradient():
    model, x, y = affine_problem(n=4)
    one, _, _ = criterion_gradient(model, x, Criterion(y), EotPlan.create(1, None))
    many, _, _ = criterion_gradient(model, x, Criterion(y), EotPlan.create(5, 2))
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)


def test_stochastic_models_are_detected_and_warned_about():
    torch.manual_seed(0)
    noisy = NoisyAffine(torch.randn(3, 16))
    plain = Affine(torch.randn(3, 16))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    assert is_stochastic(noisy, x) and not is_stochastic(plain, x)
    with pytest.warns(StochasticModelWarning, match="eot_samples"):
        PGD(0.1, steps=2)(noisy, x, y)
    with pytest.warns(StochasticModelWarning):
        DeepFool(steps=2)(noisy, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(0.1, steps=2, eot_samples=3)(noisy, x, y)
        PGD(0.1, steps=2)(plain, x, y)


def test_detection_does_not_consume_the_global_rng():
    noisy = NoisyAffine(torch.randn(3, 16))
    x = torch.rand(4, 1, 4, 4)
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    is_stochastic(noisy, x)
    assert torch.equal(torch.rand(3), a)


def test_fixed_noise_freezes_a_global_rng_model():
    noisy = NoisyAffine(torch.randn(3, 16))
    x = torch.rand(4, 1, 4, 4)
    fixed = FixedNoise(noisy, seed=1)
    assert not is_stochastic(fixed, x)
    assert not torch.equal(fixed(x), FixedNoise(noisy, seed=2)(x))


def test_eot_pgd_is_stronger_than_single_sample_pgd_on_a_noisy_model():
    torch.manual_seed(0)
    w = torch.randn(10, 64)
    model = NoisyAffine(w, sigma=2.0)
    x = torch.rand(200, 1, 8, 8)
    y = (x.flatten(1) @ w.T).argmax(1)

    def accuracy(z):  # judged by the noise-free model
        return float(((z.flatten(1) @ w.T).argmax(1) == y).float().mean())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StochasticModelWarning)
        one = PGD(0.05, steps=10, random_start=False)(model, x, y)
    eot = PGD(0.05, steps=10, random_start=False, eot_samples=32)(model, x, y)
    assert accuracy(eot) < accuracy(one) - 0.08
