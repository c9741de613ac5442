"""The FGSM sweet spot of two linear models with the same clean predictions."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.attacks import FGSM
from robustlens.data import ImageDataset
from robustlens.errors import ConfigError
from robustlens.evaluation.sweet_spot import (
    find_sweet_spot,
    plot_sweet_spot,
    plot_sweet_spot_pairs,
    sweet_spot_from_table,
    sweet_spot_images,
)


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


class _Biased(nn.Module):
    def __init__(self, w: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.w, self.bias = w, bias

    def forward(self, x):
        z = (x.flatten(1) - 0.5) @ self.w + self.bias
        return torch.stack([-z, z], dim=1)


def _crossing_setup():
    """A (biased: worse on clean images) and B (a large weight on a pixel the data never moves
    along: exact on clean images, weak under FGSM), with their margins in closed form."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, generator=g)
    w[15] = 0
    x = (0.5 + 0.1 * torch.randn(300, 1, 4, 4, generator=g)).clamp(0.2, 0.8)
    x.view(300, 16)[:, 15] = 0.5
    margin = (x.flatten(1) - 0.5) @ w
    keep = margin.abs() > 1e-3  # no image on a decision boundary
    x, margin = x[keep], margin[keep]
    y = (margin > 0).long()
    w_b = w.clone()
    w_b[15] = 5.0
    bias = 0.15
    return x, y, margin, w, w_b, bias


def _per_example(models: dict, x, y, epsilons):
    frames = []
    for name, model in models.items():
        clean = model(x).argmax(1)
        for eps in epsilons:
            pred = model(FGSM(eps)(model, x, y)).argmax(1)
            frames.append(pd.DataFrame({"model": name, "attack": "fgsm", "eps": eps, "example": range(len(y)),
                                        "label": y.numpy(), "clean_prediction": clean.numpy(),
                                        "prediction": pred.numpy(), "correct": (pred == y).numpy(),
                                        "clean_correct": (clean == y).numpy()}))
    return pd.concat(frames, ignore_index=True)


def test_sweet_spot_from_the_per_example_table_matches_the_closed_form():
    x, y, margin, w, w_b, bias = _crossing_setup()
    epsilons = [0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12]  # no eps 0 row: read from clean_correct
    table = _per_example({"robust": _Biased(w, bias), "standard": _Biased(w_b, 0.0)}, x, y, epsilons)
    spot = sweet_spot_from_table(table, ["robust", "standard"], n_examples=5)
    sign = 2 * y.double() - 1
    l1_a, l1_b = float(w.abs().sum()), float(w_b.abs().sum())
    expected_rows = []
    for eps in [0.0, *epsilons]:  # FGSM on a linear model: z moves by eps * ||w||_1 against the label
        a_right = sign * (margin.double() + bias) > eps * l1_a
        b_right = sign * margin.double() > eps * l1_b
        expected_rows.append((eps, float(a_right.double().mean()), float(b_right.double().mean()),
                              float((a_right & ~b_right).double().mean())))
    got = spot.table[["eps", "accuracy_a", "accuracy_b", "only_a_right"]].to_numpy()
    np.testing.assert_allclose(got, np.array(expected_rows), atol=1e-12)
    acc_a, acc_b = got[:, 1], got[:, 2]
    assert acc_a[0] < acc_b[0] and acc_a[-1] > acc_b[-1]  # the curves cross...
    first = next(e for e, a, b in zip(got[:, 0], acc_a, acc_b, strict=True) if a > b)
    assert spot.crossing_eps == first > 0  # ...where the closed form says
    gap = got[:, 3]
    assert spot.best_eps == got[int(gap.argmax()), 0]
    inside = gap >= 0.5 * gap.max()
    assert spot.eps_low <= spot.best_eps <= spot.eps_high
    assert inside[got[:, 0] == spot.eps_low][0] and inside[got[:, 0] == spot.eps_high][0]
    assert spot.table["in_sweet_spot"].sum() == ((got[:, 0] >= spot.eps_low) & (got[:, 0] <= spot.eps_high)).sum()
    assert len(spot.examples) == 5
    assert (spot.examples["prediction_a"] == spot.examples["label"]).all()
    assert (spot.examples["prediction_b"] != spot.examples["label"]).all()
    # the labelled image pairs: crafted again, the predictions agree with the table
    idx = torch.tensor(spot.examples["example"].to_numpy())
    adv_a, adv_b = sweet_spot_images(_Biased(w, bias), _Biased(w_b, 0.0), x[idx], y[idx], FGSM(0.0),
                                     spot.best_eps)
    assert torch.equal(_Biased(w, bias)(adv_a).argmax(1), torch.tensor(spot.examples["prediction_a"].to_numpy()))
    fig = plot_sweet_spot_pairs(x[idx], adv_a, adv_b, spot.examples, ("neg", "pos"), eps=spot.best_eps,
                                names=spot.names)
    assert len(fig.axes) == 15 and "true: " in fig.axes[0].get_title()
    curve = plot_sweet_spot(spot)
    assert len(curve.axes[0].patches) == 1  # the shaded range


def test_sweet_spot_from_table_errors_and_empty():
    x, y, margin, w, _, _ = _crossing_setup()
    table = _per_example({"a": _Biased(w, 0.0), "b": _Biased(w, 0.0)}, x[:40], y[:40], [0.0, 0.05])
    spot = sweet_spot_from_table(table, ["a", "b"])
    assert spot.examples.empty and spot.best_eps != spot.best_eps and not spot.table["in_sweet_spot"].any()
    with pytest.raises(ConfigError, match="'a'"):
        sweet_spot_from_table(table, ["a", "aa"])
    with pytest.raises(ConfigError, match="two different"):
        sweet_spot_from_table(table, ["a"])
    with pytest.raises(ConfigError, match="per_example"):
        sweet_spot_from_table(table.drop(columns="correct"), ["a", "b"])
    two = pd.concat([table, table.assign(attack="pgd")])
    with pytest.raises(ConfigError, match="several attacks"):
        sweet_spot_from_table(two, ["a", "b"])
    assert sweet_spot_from_table(two, ["a", "b"], attack="pgd").attack == "pgd"
