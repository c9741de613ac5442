"""The gradient-masking audit flags masked models and stays silent on a clean CNN."""

import copy
import warnings

import pytest
import torch
from torch import nn

from robustlens.attacks import PGD, StochasticModelWarning
from robustlens.errors import ConfigError
from robustlens.evaluation.audit import AUDIT_CHECKS, AUDIT_COLUMNS, audit_gradient_masking


class _Quantized(nn.Module):
    """Rounds the input to 4 grey levels: a zero gradient almost everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class _Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x + 0.2 * torch.randn_like(x)).clamp(0, 1))


def _flags(table):
    return set(table[table.status == "flag"].check)


def test_silent_on_a_clean_trained_cnn(digits_model, digits_test):
    surrogate = copy.deepcopy(digits_model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in surrogate.parameters():
            p.mul_(1 + 0.3 * torch.randn_like(p))
    table = audit_gradient_masking(digits_model, digits_test, PGD(0.1, steps=20, restarts=3),
                                   n_images=200, surrogate=surrogate)
    assert tuple(table.columns) == AUDIT_COLUMNS
    assert list(table.check) == list(AUDIT_CHECKS)
    assert _flags(table) == set(), table[table.status == "flag"].evidence.tolist()
    assert (table[table.status == "pass"].suggestion == "").all()


def test_flags_an_input_quantizer(digits_model, digits_test):
    table = audit_gradient_masking(_Quantized(digits_model), digits_test, PGD(0.1, steps=20),
                                   n_images=200)
    flags = _flags(table)
    assert {"zero_gradients", "active_test", "beats_random_noise"} <= flags
    row = table.set_index("check").loc["zero_gradients"]
    assert row.value == 1.0 and "BPDA" in row.suggestion and "1.000" in row.evidence


def test_flags_a_stochastic_model_attacked_without_eot(digits_model, digits_test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StochasticModelWarning)
        table = audit_gradient_masking(_Noisy(digits_model), digits_test, PGD(0.1, steps=10),
                                       n_images=100, checks=["stochastic_without_eot"])
    assert _flags(table) == {"stochastic_without_eot"}
    assert set(table.check) == {"stochastic_without_eot", "fixed_noise"}
    eot = audit_gradient_masking(_Noisy(digits_model), digits_test,
                                 PGD(0.1, steps=10, eot_samples=4), n_images=100,
                                 checks=["stochastic_without_eot"])
    assert "stochastic_without_eot" not in _flags(eot)


def test_unknown_check(digits_model, digits_test):
    with pytest.raises(ConfigError, match="monotonic_in_eps"):
        audit_gradient_masking(digits_model, digits_test, PGD(0.1), checks=["monotonic"])


class _MaskedGradient(nn.Module):
    """Same logits, zero input gradient everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            out = self.model(x)
        return out + 0.0 * x.flatten(1).sum(1, keepdim=True)


def test_black_box_check_flags_a_masked_gradient(digits_model, digits_test):
    from robustlens.attacks import APGD

    table = audit_gradient_masking(_MaskedGradient(digits_model), digits_test,
                                   APGD(0.1, steps=10), n_images=60, square_queries=200,
                                   checks=["beats_black_box"])
    row = table.set_index("check").loc["beats_black_box"]
    assert row.status == "flag" and "square" in row.evidence and "black-box" in row.suggestion
    clean = audit_gradient_masking(digits_model, digits_test, APGD(0.1, steps=10), n_images=60,
                                   square_queries=200, checks=["beats_black_box"])
    # on the unmasked model Square may still add an image or two, far fewer than when masked
    assert row.value >= clean.set_index("check").loc["beats_black_box"].value + 0.15
