"""APGD: the published step-size checkpoints, the ball and box for every norm, DLR, APGD-T."""

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from robustlens.attacks import (
    APGD,
    L2PGD,
    PGD,
    Criterion,
    LinfPGD,
    apgd_checkpoints,
    dlr_loss,
    gradient_attack,
    perturbation_norm,
)
from robustlens.attacks.apgd import ApgdRule
from robustlens.errors import ConfigError


def _published(steps: int) -> list[int]:
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), exact rationals
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * steps) for q in p})


@pytest.mark.parametrize("steps", [10, 50, 100, 250])
def test_checkpoints_are_the_published_ones(steps):
    assert apgd_checkpoints(steps) == _published(steps)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


class _Flat(nn.Module):
    """Logits that do not depend on the input: the loss never increases."""

    def forward(self, x):
        return torch.tensor([1.0, 0.0, -1.0]).expand(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]


def test_step_size_is_halved_at_every_checkpoint_when_the_loss_stalls():
    x = torch.full((4, 1, 3, 3), 0.5)
    rule = ApgdRule("inf")
    gradient_attack(_Flat(), x, Criterion(torch.zeros(4, dtype=torch.long)), eps=0.1,
                    steps=50, step_size=0.2, norm="inf", random_init=True,
                    generator=torch.Generator().manual_seed(0), rule=rule)
    assert [t for t, _ in rule.halvings] == apgd_checkpoints(50)[1:]
    assert all(bool(mask.all()) for _, mask in rule.halvings)
    halvings = len(apgd_checkpoints(50)) - 1
    torch.testing.assert_close(rule.eta.flatten(), torch.full((4,), 0.2 / 2 ** halvings))


def _mlp(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, classes))


@pytest.mark.parametrize("norm,eps", [("inf", 0.05), ("2", 0.5), ("1", 2.0)])
@pytest.mark.parametrize("kind", ["ce", "dlr", "top", "least_likely"])
def test_apgd_stays_in_the_ball_and_the_box(norm, eps, kind):
    model = _mlp()
    x = torch.rand(12, 1, 6, 6)
    x[:3] = x[:3].round()  # pixels at 0 and 1: the box binds
    y = torch.randint(0, 5, (12,))
    kwargs = {"top": {"loss": "dlr", "targeted": "top", "n_targets": 3},
              "least_likely": {"targeted": "least_likely"}}.get(kind, {"loss": kind})
    attack = APGD(eps, norm, steps=8, **kwargs)
    result = attack.run(model, x, y)
    adv = result.adversarial
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    size = perturbation_norm(adv - x, norm)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert result.l1 is not None
    torch.testing.assert_close(result.l1, perturbation_norm(adv - x, "1"))
    with torch.no_grad():
        wrong = model(adv).argmax(1) != y
    if kind != "least_likely":
        assert bool((wrong == result.success).all())


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_model():
    from _attack_models import digits_softmax

    model, x, y = digits_softmax(80)
    pgd = PGD(0.08, steps=20).run(model, x, y).success.float().mean()
    apgd = APGD(0.08, steps=20).run(model, x, y).success.float().mean()
    apgd_t = APGD(0.08, loss="dlr", targeted="top", n_targets=3, steps=20).run(model, x, y)
    assert float(apgd) >= float(pgd) - 0.02
    assert float(apgd_t.success.float().mean()) >= float(pgd) - 0.02
    assert apgd_t.targets is None  # the sweep reports an untargeted outcome


def test_dlr_matches_its_formula():
    z = torch.tensor([[3.0, 1.0, 2.5, -1.0, 0.5], [0.2, 0.1, 4.0, 3.0, -2.0]])
    y, t = torch.tensor([0, 2]), torch.tensor([2, 3])
    zs = np.sort(z.numpy(), axis=1)[:, ::-1]
    zn = z.numpy()
    expected_u, expected_t = [], []
    for i in range(2):
        other = max(zn[i, j] for j in range(5) if j != y[i])
        expected_u.append(-(zn[i, y[i]] - other) / (zs[i, 0] - zs[i, 2]))
        expected_t.append(-(zn[i, y[i]] - zn[i, t[i]]) / (zs[i, 0] - 0.5 * (zs[i, 2] + zs[i, 3])))
    torch.testing.assert_close(dlr_loss(z, y), torch.tensor(expected_u))
    torch.testing.assert_close(dlr_loss(z, y, t), torch.tensor(expected_t))
    # scale and shift invariant
    torch.testing.assert_close(dlr_loss(3 * z + 7, y), dlr_loss(z, y))


def test_bad_settings_are_one_clear_error():
    x = torch.rand(4, 1, 6, 6)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        APGD(0.1, loss="dlr", targeted="top", steps=2)(_mlp(3), x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="at least 3 classes"):
        APGD(0.1, loss="dlr", steps=2)(_mlp(2), x, torch.zeros(4, dtype=torch.long))
    for kwargs in ({"norm": "l1"}, {"loss": "hinge"}, {"n_targets": 0}, {"steps": 0},
                   {"targeted": "bottom"}):
        with pytest.raises(ConfigError):
            APGD(0.1, **kwargs)


def test_apgd_names():
    assert APGD(0.1).name == "apgd_ce"
    assert APGD(0.5, "2", "dlr").name == "apgd_dlr_l2"
    assert APGD(5.0, "1", "dlr", targeted="top").name == "apgd_t_l1"


def test_linf_and_l2_pgd_fix_their_norm():
    assert LinfPGD(0.1).norm == "inf" and L2PGD(1.0).norm == "2"
    assert isinstance(LinfPGD(0.1), PGD) and L2PGD(1.0, steps=5).steps == 5
    with pytest.raises(TypeError):
        LinfPGD(0.1, norm="2")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        dataclasses.replace(L2PGD(1.0), norm="inf")
    assert dataclasses.replace(L2PGD(1.0), eps=0.5).norm == "2"


def test_restarts_with_early_exit_never_weaken_apgd():
    model = _mlp()
    x = torch.rand(32, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    one = APGD(0.03, steps=6).run(model, x, y, early_stop=True)
    more = APGD(0.03, steps=6, restarts=3).run(model, x, y, early_stop=True)
    assert bool((more.success | ~one.success).all())
    assert float(more.linf.max()) <= 0.03 + 1e-6
