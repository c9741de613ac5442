"""FGSM and PGD (L-inf, L2) against the closed forms of a linear binary classifier."""

import pytest
import torch
from _attack_models import Affine

from robustlens.attacks import FGSM, PGD


def _binary(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(16, generator=g)
    # logits = [0, w.x + b]: class 1 iff w.x + b > 0
    model = Affine(torch.stack([torch.zeros(16), w]), torch.tensor([0.0, -0.5 * float(w.sum())]))
    x = 0.5 + 0.05 * torch.randn(6, 1, 4, 4, generator=g)
    with torch.no_grad():
        labels = model(x).argmax(1)
    s = (labels * 2 - 1).float().view(-1, 1, 1, 1)  # sign of the margin w.x + b
    return model, x, labels, w.view(1, 1, 4, 4), s


@pytest.mark.parametrize("eps", [0.01, 0.03])
def test_fgsm_is_exact_linf_worst_case(eps):
    model, x, y, w, s = _binary()
    x_adv = FGSM(eps)(model, x, y)
    torch.testing.assert_close(x_adv, x - eps * w.sign() * s)


def test_pgd_linf_reaches_the_linf_worst_case():
    model, x, y, w, s = _binary(1)
    x_adv = PGD(0.02, steps=5, step_size=0.01, random_start=False)(model, x, y)
    torch.testing.assert_close(x_adv, x - 0.02 * w.sign() * s)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_l2_reaches_the_l2_worst_case(random_start):
    model, x, y, w, s = _binary(2)
    eps = 0.1
    attack = PGD(eps, steps=20, step_size=0.05, norm="2", random_start=random_start)
    x_adv = attack(model, x, y)
    expected = x - eps * w / w.norm() * s
    torch.testing.assert_close(x_adv, expected, atol=2e-4, rtol=0)
    assert attack.name == "pgd_l2"


def test_targeted_fgsm_closed_form():
    model, x, y, w, s = _binary(3)
    target = 1 - y
    x_adv = FGSM(0.02, targeted="given")(model, x, y, targets=target)
    # descending CE(target) moves towards the other class: the same as untargeted in 2 classes
    torch.testing.assert_close(x_adv, x - 0.02 * w.sign() * s)


def test_eps_zero_returns_clean_images():
    model, x, y, _, _ = _binary()
    torch.testing.assert_close(PGD(0.0, steps=3)(model, x, y), x)
