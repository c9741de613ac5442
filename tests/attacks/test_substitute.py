"""The substitute black-box attack (Papernot et al. 2017) on the embedded digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.attacks import FGSM, RandomNoise, Substitute
from robustlens.errors import ConfigError


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("a black-box attack must not ask the target for gradients")


class _BlackBox(nn.Module):
    """The target behind a wall: its backward raises; forward calls and images are counted."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.queries = 0

    def forward(self, x):
        self.queries += x.shape[0]
        return self.inner(_NoBackward.apply(x))


@pytest.fixture(scope="module")
def split(digits_test):
    """100 seed images the attacker holds; 300 other images to attack."""
    return digits_test.images[:100], digits_test.images[100:400], digits_test.labels[100:400]


def test_substitute_beats_random_noise_and_never_backpropagates_the_target(digits_model, split):
    seed, x, y = split
    target = _BlackBox(digits_model)
    attack = Substitute(FGSM(eps=0.2), seed_images=seed, rounds=2, epochs=10)
    substitute = attack.fit(target)
    assert target.queries == 100 * 2 ** 2 + 1  # the seed set doubles each round (+1: the class count)
    assert all(not p.requires_grad for p in substitute.parameters()) and not substitute.training
    black_box = attack.with_substitute(substitute).run(target, x, y).success.float().mean()
    noise = RandomNoise(eps=0.2).run(target, x, y).success.float().mean()
    assert black_box > noise + 0.2, (float(black_box), float(noise))
    # the augmentation rounds are the point: the substitute of the seed set alone is weaker
    plain = Substitute(FGSM(eps=0.2), seed_images=seed, rounds=0, epochs=10)
    assert black_box > plain.run(target, x, y).success.float().mean()


def test_deterministic_for_a_seed(digits_model, split):
    seed, x, y = split
    a = Substitute(FGSM(eps=0.2), seed_images=seed, rounds=1, epochs=3, seed=5)
    b = Substitute(FGSM(eps=0.2), seed_images=seed, rounds=1, epochs=3, seed=5)
    first, second = a(digits_model, x, y), b(digits_model, x, y)
    assert torch.equal(first, second)
    target = _BlackBox(digits_model)
    a(target, x, y)
    queries = target.queries
    a(target, x[:10], y[:10])  # the object keeps the substitute of this target: no new training
    assert target.queries == queries
    other = Substitute(FGSM(eps=0.2), seed_images=seed, rounds=1, epochs=3, seed=6)(digits_model, x, y)
    assert not torch.equal(first, other)


def test_the_cache_trains_once(digits_model, split, tmp_path):
    seed, x, y = split
    attack = Substitute(FGSM(eps=0.2), rounds=1, epochs=2)
    first = attack.fit_cached(_BlackBox(digits_model), seed, cache_dir=tmp_path)
    files = list((tmp_path / "substitutes").glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith("digits_cnn-")
    target = _BlackBox(digits_model)  # the same weights
    second = attack.fit_cached(target, seed, cache_dir=tmp_path)
    assert target.queries == 0  # nothing was trained or queried again
    for p, q in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(attack.with_substitute(first)(digits_model, x, y),
                       attack.with_substitute(second)(digits_model, x, y))
    # another budget, another key
    assert Substitute(FGSM(eps=0.2), rounds=2, epochs=2).cache_key(digits_model, seed) \
        != attack.cache_key(digits_model, seed)


def test_bad_options():
    with pytest.raises(ConfigError, match="digits_cnn"):
        Substitute(FGSM(eps=0.1), architecture="digit_cnn")
    with pytest.raises(ConfigError, match="lam"):
        Substitute(FGSM(eps=0.1), lam=0)
    with pytest.raises(ConfigError, match="seed images"):
        Substitute(FGSM(eps=0.1)).fit(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="architecture"):
        Substitute(FGSM(eps=0.1)).fit(nn.Flatten(), torch.rand(4, 3, 5, 5))
    assert Substitute(FGSM(eps=0.1)).name == "substitute_fgsm" and Substitute(FGSM(eps=0.1)).eps == 0.1


def test_a_cache_dir_trains_once_across_attack_objects(digits_model, split, tmp_path):
    _, x, y = split
    target = _BlackBox(digits_model)
    first = Substitute(FGSM(eps=0.1), rounds=1, epochs=2, n_seed=50, cache_dir=str(tmp_path))(target, x, y)
    queries = target.queries
    assert queries == 50 * 2 + 1 + 1  # labels of 100 images, the final verdict, and the input check's one probe
    again = Substitute(FGSM(eps=0.1), rounds=1, epochs=2, n_seed=50, cache_dir=str(tmp_path))(target, x, y)
    assert target.queries == queries  # the second object found the substitute on disk
    assert torch.equal(first, again)
    stronger = Substitute(FGSM(eps=0.2), rounds=1, epochs=2, n_seed=50, cache_dir=str(tmp_path))(target, x, y)
    assert target.queries == queries and not torch.equal(stronger, first)  # another eps, same substitute
