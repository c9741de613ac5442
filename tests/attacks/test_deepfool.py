"""DeepFool: minimal perturbations of an affine model, batched = per-sample, early stop."""

import math

import pytest
import torch
from _attack_models import affine_problem

from robustlens.attacks import DeepFool
from robustlens.errors import ConfigError


def _closed_form(model, x, y, norm):
    """Minimal perturbation (B, C, H, W) and its norm (B,) for an affine model."""
    w, b = model.weight.detach(), model.bias.detach()
    f = x.flatten(1) @ w.T + b
    rs, ns = [], []
    for i in range(x.shape[0]):
        best = (math.inf, None)
        for j in range(w.shape[0]):
            if j == y[i]:
                continue
            dw = w[j] - w[y[i]]
            df = float((f[i, y[i]] - f[i, j]).abs())
            if norm == "2":
                dist, r = df / float(dw.norm()), df / float(dw.norm()) ** 2 * dw
            else:
                dist, r = df / float(dw.abs().sum()), df / float(dw.abs().sum()) * dw.sign()
            if dist < best[0]:
                best = (dist, r)
        ns.append(best[0])
        rs.append(best[1].view(x.shape[1:]))
    return torch.stack(rs), torch.tensor(ns)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_deepfool_finds_the_minimal_perturbation_of_an_affine_model(norm):
    model, x, y = affine_problem(n=8, k=5)
    overshoot = 0.02
    result = DeepFool(norm, overshoot=overshoot, candidates=None).run(model, x, y)
    r, dist = _closed_form(model, x, y, norm)
    assert bool(result.success.all())
    torch.testing.assert_close(result.adversarial - x, (1 + overshoot) * r, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.minimal_norm, (1 + overshoot) * dist, atol=1e-5, rtol=1e-4)


def test_batched_equals_a_per_sample_loop():
    model, x, y = affine_problem(n=6, k=4, seed=3)
    attack = DeepFool("2", steps=10)
    batched = attack(model, x, y)
    single = torch.cat([attack(model, x[i:i + 1], y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batched, single)


def test_misclassified_examples_are_left_unchanged():
    model, x, y = affine_problem(n=4, k=3, seed=4)
    wrong = (y + 1) % 3
    result = DeepFool().run(model, x, wrong)
    torch.testing.assert_close(result.adversarial, x)
    assert bool(result.success.all())
    assert torch.equal(result.minimal_norm, torch.zeros(4))


def test_eps_bound_projects_and_keeps_the_minimal_norm():
    model, x, y = affine_problem(n=8, k=5, seed=5)
    free = DeepFool("inf").run(model, x, y)
    eps = float(free.minimal_norm.median())
    bounded = DeepFool("inf", eps=eps).run(model, x, y)
    assert float(bounded.linf.max()) <= eps + 1e-6
    ok = bounded.success
    torch.testing.assert_close(bounded.minimal_norm[ok], free.minimal_norm[ok])
    # every example whose minimal perturbation exceeds eps fails (affine: nothing closer exists)
    assert not bool(bounded.success[free.minimal_norm > eps * 1.0001].any())


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_deepfool_on_a_trained_cnn_fools_every_image(digits_model, digits_test, norm):
    x, y = digits_test.images[:64], digits_test.labels[:64]
    result = DeepFool(norm, steps=50).run(digits_model, x, y)
    assert bool(result.success.all())
    with torch.no_grad():
        assert bool((digits_model(result.adversarial).argmax(1) != y).all())
    own = result.linf if norm == "inf" else result.l2
    torch.testing.assert_close(result.minimal_norm, own)
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1


@pytest.mark.parametrize("kwargs", [{"norm": "1"}, {"overshoot": -1}, {"steps": 0},
                                    {"candidates": 1}, {"eps": -0.1}])
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        DeepFool(**kwargs)
