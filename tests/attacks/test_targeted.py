"""Targeted FGSM / PGD reach their target on an easy model, in every target mode."""

import pytest
import torch
from _attack_models import affine_problem

from robustlens.attacks import FGSM, PGD
from robustlens.errors import ConfigError


@pytest.mark.parametrize("mode", [3, "random", "least_likely", "given"])
@pytest.mark.parametrize("norm,eps", [("inf", 0.5), ("2", 2.0)])
def test_targeted_pgd_reaches_its_target(mode, norm, eps):
    model, x, y = affine_problem(n=16, k=5, seed=1)
    attack = PGD(eps, steps=30, step_size=eps / 10, norm=norm, targeted=mode, random_start=False)
    given = (y + 2) % 5 if mode == "given" else None
    result = attack.run(model, x, y, targets=given)
    with torch.no_grad():
        pred = model(result.adversarial).argmax(1)
    assert result.targets is not None
    if mode == 3:
        assert bool((result.targets == 3).all())
    if mode == "given":
        assert torch.equal(result.targets, given)
    if mode == "least_likely":
        with torch.no_grad():
            assert torch.equal(result.targets, model(x).argmin(1))
    if mode == "random":
        assert bool((result.targets != y).all())
    assert torch.equal(pred, result.targets)
    assert bool(result.success.all())


def test_random_targets_are_reproducible_and_cover_other_classes():
    model, x, y = affine_problem(n=64, k=5, seed=2)
    a = PGD(0.1, steps=1, targeted="random", seed=3).run(model, x, y).targets
    b = PGD(0.1, steps=1, targeted="random", seed=3).run(model, x, y).targets
    assert torch.equal(a, b)
    assert bool((a != y).all()) and len(a.unique()) >= 4


def test_targeted_fgsm_moves_towards_the_target():
    model, x, y = affine_problem(n=16, k=5, seed=4)
    t = (y + 1) % 5
    x_adv = FGSM(0.05, targeted="given")(model, x, y, targets=t)
    with torch.no_grad():
        before, after = model(x), model(x_adv)
    gap = lambda z: z.gather(1, t[:, None]) - z.gather(1, y[:, None])  # noqa: E731
    assert bool((gap(after) > gap(before)).all())


def test_targets_need_the_given_mode():
    model, x, y = affine_problem(n=4)
    with pytest.raises(ConfigError, match="given"):
        PGD(0.1)(model, x, y, targets=y)
    with pytest.raises(ConfigError, match="targets"):
        PGD(0.1, targeted="given")(model, x, y)
    with pytest.raises(ConfigError, match="targeted"):
        PGD(0.1, targeted="nearest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="target classes"):
        PGD(0.1, targeted=7)(model, x, y)
