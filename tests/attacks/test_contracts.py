"""Every attack: shapes, the ball and pixel range, an untouched model, clear errors."""

import math

import pytest
import torch
from torch import nn

from robustlens.attacks import (
    APGD,
    FAB,
    FGSM,
    PGD,
    Attack,
    AutoAttack,
    DeepFool,
    RandomNoise,
    Square,
    Transfer,
    create_preset,
    vonenet_pgd,
)
from robustlens.errors import ConfigError, RobustlensError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _attacks():
    surrogate = _model()
    return [
        PGD(0.1, steps=3), PGD(0.5, steps=3, norm="2", restarts=2, eot_samples=2),
        PGD(0.1, steps=2, targeted="least_likely", loss="margin"), FGSM(0.1),
        DeepFool(steps=3), DeepFool("2", steps=3, eps=0.3), RandomNoise(0.1, trials=2),
        RandomNoise(0.5, norm="2"), Transfer(PGD(0.1, steps=2), surrogate),
        PGD(2.0, steps=2, norm="1"), APGD(0.1, steps=3), APGD(0.5, "2", "dlr", steps=3),
        APGD(2.0, "1", targeted="top", n_targets=2, steps=3), Square(0.1, queries=5),
        Square(0.5, "2", queries=5), FAB(0.1, steps=3, n_targets=2),
        FAB(0.5, "2", targeted=None, steps=3, restarts=2), FAB(2.0, "1", n_targets=1, steps=3),
        AutoAttack(0.1, version="custom", attacks=(APGD(0.1, steps=2), Square(0.1, queries=3))),
    ]


@pytest.mark.parametrize("attack", _attacks(), ids=lambda a: a.name)
def test_attack_contract(attack: Attack):
    model = _model()
    model.train()
    model[3].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    out = attack(model, x, y)
    result = attack.run(model, x, y, early_stop=True)
    assert out.shape == x.shape and result.adversarial.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    if math.isfinite(attack.eps):
        size = {"inf": result.linf, "2": result.l2, "1": result.l1}[attack.norm]
        assert size is not None and float(size.max()) <= attack.eps * (1 + 1e-5) + 1e-5
    assert result.success.dtype == torch.bool and result.success.shape == (8,)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())
    assert isinstance(attack.name, str) and attack.name
    with pytest.raises(RobustlensError):
        attack(model, x * 2, y)


def test_vonenet_preset_matches_the_protocol():
    a = vonenet_pgd()
    assert (a.eps, a.steps, a.norm, a.eot_samples, a.random_start, a.restarts) == \
        (1 / 255, 64, "inf", 10, False, 1)
    assert a.effective_step_size == pytest.approx(1 / 255 / 4)
    assert create_preset("vonenet", eps=2 / 255).eps == 2 / 255
    with pytest.raises(ConfigError, match="vonenet"):
        create_preset("vonnet")


@pytest.mark.parametrize("kwargs", [{"eot_samples": 0}, {"restarts": 0}, {"loss": "hinge"},
                                    {"eot_chunk": 0}, {"step_size": -1.0}])
def test_bad_pgd_config(kwargs):
    with pytest.raises(ConfigError):
        PGD(0.1, **kwargs)


def test_transfer_uses_only_the_surrogate():
    target, surrogate = _model().eval(), _model().eval()
    with torch.no_grad():
        surrogate[5].weight.mul_(-1)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    attack = Transfer(PGD(0.1, steps=3), surrogate)
    torch.testing.assert_close(attack(target, x, y), PGD(0.1, steps=3)(surrogate, x, y))
    assert attack.name == "transfer_pgd" and attack.eps == 0.1


def test_random_noise_has_the_exact_size():
    x = 0.25 + 0.5 * torch.rand(8, 1, 8, 8)
    model = _model()
    y = torch.zeros(8, dtype=torch.long)
    r_inf = RandomNoise(0.1).run(model, x, y)
    assert torch.allclose((r_inf.adversarial - x).abs(), torch.full_like(x, 0.1), atol=1e-6)
    r_2 = RandomNoise(0.5, norm="2").run(model, x, y)
    torch.testing.assert_close(r_2.l2, torch.full((8,), 0.5), atol=1e-2, rtol=0)
