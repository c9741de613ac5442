"""Clean and adversarial recordings under the same noise sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.activations import record, record_paired
from robustlens.errors import RobustlensError


class Noisy(nn.Module):
    """A linear layer followed by additive Gaussian noise from the global generator."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.noise = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(self.fc(x) + torch.randn(x.shape[0], 3))


def test_same_noise_for_clean_and_adversarial():
    torch.manual_seed(0)
    model = Noisy()
    x = torch.randn(5, 4)
    state = torch.get_rng_state()
    clean, adv = record_paired(model, x, x.clone(), "noise", seed=3)
    torch.testing.assert_close(clean["noise"], adv["noise"])  # identical inputs, same noise
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    with record(model, "noise") as rec:
        model(x)
    assert not torch.allclose(rec["noise"], clean["noise"])  # an unseeded pass differs


def test_average_over_samples_matches_hand_computation():
    torch.manual_seed(0)
    model = Noisy()
    x = torch.randn(5, 4)
    _, adv = record_paired(model, x, x + 1, "noise", n_samples=3, seed=7)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    for s in range(3):
        torch.manual_seed(7 + s)
        expected += model(x + 1).detach().double()
    torch.testing.assert_close(adv["noise"], (expected / 3).float())


def test_bad_inputs():
    with pytest.raises(RobustlensError, match="differ in shape"):
        record_paired(Noisy(), torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(RobustlensError, match="n_samples"):
        record_paired(Noisy(), torch.zeros(2, 4), torch.zeros(2, 4), n_samples=0)
