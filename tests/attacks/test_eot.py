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


def test_deepfool_eot_in_chunks_equals_the_stacked_samples():
    # a deterministic model: every sample is the same, so the chunked average (gradients summed
    # chunk by chunk) must give the stacked one's and the single-sample attack's adversarials
    model, x, y = affine_problem(n=6, k=5)
    single = DeepFool("2", candidates=None).run(model, x, y)
    for chunk in (1, 2, 4):
        chunked = DeepFool("2", candidates=None, eot_samples=4, eot_chunk=chunk,
                           warn_stochastic=False).run(model, x, y)
        torch.testing.assert_close(chunked.adversarial, single.adversarial, atol=1e-5, rtol=1e-5)
        assert torch.equal(chunked.success, single.success)


def test_deepfool_eot_in_chunks_holds_one_chunk_per_pass():
    # the largest batch the model sees is one chunk of samples x the images, not k x the images
    torch.manual_seed(0)
    model = NoisyAffine(torch.randn(3, 16), sigma=0.1)
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    seen: list[int] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[0]))
    for chunk, largest in ((1, 5), (2, 10), (4, 20)):
        seen.clear()
        result = DeepFool("inf", eot_samples=4, eot_chunk=chunk, steps=5).run(model, x, y)
        assert max(seen) == largest
        assert bool(result.success.float().mean() > 0.5)
