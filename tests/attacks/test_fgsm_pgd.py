"""FGSM and PGD: closed forms, the eps-ball and pixel range, and an untouched model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.attacks import FGSM, PGD
from robustlens.errors import ConfigError, RobustlensError


def _linear(d: int, k: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


def test_fgsm_equals_closed_form_on_a_linear_model() -> None:
    model = _linear(16, 2)
    w = model[1].weight.detach()
    x = 0.3 + 0.4 * torch.rand(32, 1, 4, 4)  # interior: no clipping at eps 0.1
    y = torch.randint(0, 2, (32,))
    eps = 0.1
    x_adv = FGSM(eps=eps)(model, x, y)
    direction = (w[1 - y] - w[y]).sign().view(32, 1, 4, 4)  # worst case: x - eps * sign(w) * s
    torch.testing.assert_close(x_adv, x + eps * direction, rtol=0, atol=1e-6)
    # the margin of the true class drops by exactly eps * ||w_y - w_other||_1
    def margin(z: torch.Tensor) -> torch.Tensor:
        logits = model(z)
        return logits.gather(1, y[:, None])[:, 0] - logits.gather(1, (1 - y)[:, None])[:, 0]
    expected = margin(x) - eps * (w[y] - w[1 - y]).abs().sum(1)
    torch.testing.assert_close(margin(x_adv), expected, rtol=1e-5, atol=1e-5)


def test_fgsm_is_pgd_with_one_step_and_no_random_start(trained_digits_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits.images[:50], digits.labels[:50]
    a = FGSM(eps=0.05)(trained_digits_cnn, x, y)
    b = PGD(eps=0.05, steps=1, step_size=0.05, random_start=False)(trained_digits_cnn, x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 0.5)])
def test_pgd_stays_in_ball_and_pixel_range(trained_digits_cnn, digits, norm, eps) -> None:  # type: ignore[no-untyped-def]
    x, y = digits.images[:200], digits.labels[:200]
    x_adv = PGD(eps=eps, steps=10, norm=norm)(trained_digits_cnn, x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        clean = (trained_digits_cnn(x).argmax(1) == y).float().mean()
        robust = (trained_digits_cnn(x_adv).argmax(1) == y).float().mean()
    assert robust <= clean
    assert robust < clean - 0.2  # the attack does something real


def test_pgd_is_at_least_as_strong_as_fgsm(trained_digits_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    x, y = digits.images[:300], digits.labels[:300]
    with torch.no_grad():
        acc = lambda z: float((trained_digits_cnn(z).argmax(1) == y).float().mean())  # noqa: E731
        assert acc(PGD(eps=0.1, steps=20)(trained_digits_cnn, x, y)) <= acc(FGSM(eps=0.1)(trained_digits_cnn, x, y))


def test_pgd_leaves_the_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.train()
    model[3].eval()  # a mixed mode must come back mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    PGD(eps=0.1, steps=3)(model, x, y)
    FGSM(eps=0.1)(model, x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True]
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def test_random_start_is_reproducible() -> None:
    model = _linear(16, 3)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    a = PGD(eps=0.1, steps=2, step_size=0.01, seed=1)(model, x, y)
    b = PGD(eps=0.1, steps=2, step_size=0.01, seed=1)(model, x, y)
    c = PGD(eps=0.1, steps=2, step_size=0.01, seed=2)(model, x, y)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(PGD(eps=0.1, steps=2)(model, x, y, generator=g1),
                       PGD(eps=0.1, steps=2)(model, x, y, generator=g2))


def test_eps_zero_returns_the_images() -> None:
    model = _linear(16, 3)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    assert torch.equal(PGD(eps=0.0)(model, x, y), x)


def test_bad_inputs_are_clear_errors() -> None:
    model = _linear(16, 3)
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RobustlensError, match=r"\[0, 1\]"):
        PGD(eps=0.1)(model, x * 255, y)
    with pytest.raises(RobustlensError, match="NaN"):
        PGD(eps=0.1)(model, x * float("nan"), y)
    with pytest.raises(RobustlensError, match=r"\(B, C, H, W\)"):
        PGD(eps=0.1)(model, x[0], y)
    with pytest.raises(RobustlensError, match="shaped"):
        PGD(eps=0.1)(model, x, y[:2])
    with pytest.raises(ConfigError, match="eps"):
        PGD(eps=-0.1)
    with pytest.raises(ConfigError, match="steps"):
        PGD(eps=0.1, steps=0)
    with pytest.raises(ConfigError, match="norm"):
        PGD(eps=0.1, norm="l1")  # type: ignore[arg-type]


def test_eot_on_a_deterministic_model_costs_one_sample(trained_digits_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    def count(_m, _i, _o):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1

    x, y = digits.images[:20], digits.labels[:20]
    handle = trained_digits_cnn.register_forward_hook(count)
    try:
        a = PGD(eps=0.05, steps=4, eot_samples=8)(trained_digits_cnn, x, y)
    finally:
        handle.remove()
    assert calls <= 4 + 4  # 4 steps, plus the stochasticity check; not 8 x 4
    assert torch.equal(a, PGD(eps=0.05, steps=4)(trained_digits_cnn, x, y))
