"""Square: no gradients, the ball and the box, the schedule, stochastic models, masked models."""

import warnings

import pytest
import torch
from _attack_models import MaskedGradient, NoBackward, NoisyAffine, digits_softmax
from torch import nn

from robustlens.attacks import APGD, Square, StochasticModelWarning, perturbation_norm
from robustlens.attacks.square import square_fraction
from robustlens.errors import ConfigError


@pytest.fixture(scope="module")
def softmax():
    return digits_softmax(60)


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 0.8)])
def test_square_uses_no_gradient_and_stays_in_the_ball(softmax, norm, eps):
    model, x, y = softmax
    x = x.clone()
    x[:5] = x[:5].round()
    blind = NoBackward(model)
    with pytest.raises(RuntimeError, match="no gradient"):
        APGD(eps, norm, steps=2)(blind, x, y)
    result = Square(eps, norm, queries=150).run(blind, x, y)
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(perturbation_norm(adv - x, norm).max()) <= eps * (1 + 1e-5)
    assert float(result.success.float().mean()) > 0.1
    with torch.no_grad():
        assert bool(((model(adv).argmax(1) != y) == result.success).all())


def test_square_finds_what_apgd_misses_on_a_masked_model(softmax):
    model, x, y = softmax
    masked = MaskedGradient(model)
    apgd = APGD(0.1, steps=20).run(masked, x, y).success.float().mean()
    square = Square(0.1, queries=300).run(masked, x, y).success.float().mean()
    assert float(square) >= float(apgd) + 0.15, (float(apgd), float(square))


def test_window_schedule():
    assert square_fraction(0.8, 0, 10000) == 0.8
    assert square_fraction(0.8, 11, 10000) == 0.4
    assert square_fraction(0.8, 9000, 10000) == 0.8 / 512
    assert square_fraction(0.8, 30, 100) == 0.8 / 64  # 3000 of 10,000: rescaled


def test_square_on_a_stochastic_model_averages_scores():
    torch.manual_seed(0)
    model = NoisyAffine(torch.randn(4, 16), sigma=0.2)
    x = torch.rand(6, 1, 4, 4)
    y = torch.zeros(6, dtype=torch.long)
    with pytest.warns(StochasticModelWarning):
        Square(0.1, queries=5)(model, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StochasticModelWarning)
        adv = Square(0.1, queries=20, eot_samples=4)(model, x, y)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


def test_bad_square_settings():
    with pytest.raises(ConfigError, match="queries"):
        Square(0.1, queries=0)
    with pytest.raises(ConfigError, match="norm"):
        Square(1.0, norm="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="untargeted"):
        Square(0.1, queries=2)(nn.Flatten(), torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long),
                               targets=torch.zeros(2, dtype=torch.long))
