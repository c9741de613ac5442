"""The FGSM sweet spot of two linear models with the same clean predictions."""

import torch
from torch import nn

from robustlens.data import ImageDataset
from robustlens.evaluation.sweet_spot import find_sweet_spot


class _Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x):
        z = (x.flatten(1) - 0.5) @ self.w
        return torch.stack([-z, z], dim=1)


def test_sweet_spot_matches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    w[15] = 0
    x = 0.5 + 0.1 * torch.randn(400, 1, 4, 4, generator=g)
    x.view(400, 16)[:, 15] = 0.5  # the data never varies along pixel 15...
    x = x.clamp(0.2, 0.8)
    w_b = w.clone()
    w_b[15] = 5.0  # ...so model B agrees on clean images but is weaker under FGSM
    margin = (x.flatten(1) - 0.5) @ w
    y = (margin > 0).long()
    data = ImageDataset(x, y, ("neg", "pos"))
    epsilons = [0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
    spot = find_sweet_spot(_Linear(w), _Linear(w_b), data, epsilons, n_examples=4)
    for row in spot.table.itertuples():
        a_right = margin.abs() > row.eps * w.abs().sum()
        b_right = margin.abs() > row.eps * w_b.abs().sum()
        assert row.only_a_right == (a_right & ~b_right).float().mean().item()
        assert row.only_b_right == 0.0
    gap = spot.table.only_a_right
    assert spot.best_eps == spot.table.eps[gap.idxmax()]
    assert spot.eps_low <= spot.best_eps <= spot.eps_high
    assert len(spot.examples) == 4 and spot.clean.shape == (4, 1, 4, 4)
    assert (spot.examples.prediction_a == spot.examples.label).all()
    assert (spot.examples.prediction_b != spot.examples.label).all()
    assert spot.adversarial_a.shape == spot.adversarial_b.shape == (4, 1, 4, 4)


def test_no_sweet_spot_between_identical_models():
    w = torch.randn(16)
    x = torch.rand(50, 1, 4, 4)
    y = (((x.flatten(1) - 0.5) @ w) > 0).long()
    spot = find_sweet_spot(_Linear(w), _Linear(w), ImageDataset(x, y, ("a", "b")), [0.0, 0.1])
    assert spot.examples.empty and spot.best_eps != spot.best_eps  # nan
