"""Shared fixtures: real small data, tiny trained models, a quiet 2-thread torch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from robustlens.data import ImageDataset, load_digits
from robustlens.errors import DataError

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fashion_mnist_test() -> ImageDataset:
    from robustlens.data import load_fashion_mnist

    try:
        return load_fashion_mnist("test")
    except DataError as err:  # `make test` installs it; a bare pytest may not have it
        pytest.skip(f"Fashion-MNIST unavailable: {err}")


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_digits()


@pytest.fixture(scope="session")
def digits_model() -> torch.nn.Module:
    """digits_cnn trained for a few seconds on the digits train split (about 96% test)."""
    from robustlens.study.models import build_seeded
    from robustlens.training import TrainConfig, train_model

    model = build_seeded("digits_cnn", {}, 0)
    train_model(model, load_digits("train"), TrainConfig(epochs=15, batch_size=64, lr=5e-3))
    return model.eval()


@pytest.fixture(scope="session")
def trained_digits_cnn(digits_model: torch.nn.Module) -> torch.nn.Module:
    return digits_model


@pytest.fixture(scope="session")
def digits_test() -> ImageDataset:
    return load_digits("test")


class Quantize(torch.nn.Module):
    """Rounds pixels to 0, 0.5 or 1: the input gradient is zero everywhere (masked)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 2) / 2


@pytest.fixture(scope="session")
def digits_linear() -> Callable[[bool], torch.nn.Module]:
    """Make a linear classifier of 500 digits (fitted by scikit-learn), behind an input quantizer
    whose gradient is zero (a gradient-masked model) when called with ``masked=True``."""

    def make(masked: bool) -> torch.nn.Module:
        from sklearn.linear_model import LogisticRegression

        data = load_digits("train").subset(torch.arange(500))
        layers = [Quantize()] if masked else []
        model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64, 10))
        with torch.no_grad():
            x = model[:-1](data.images).numpy()
            fit = LogisticRegression(C=10.0, max_iter=500).fit(x, data.labels.numpy())
            model[-1].weight.copy_(torch.as_tensor(fit.coef_, dtype=torch.float32))
            model[-1].bias.copy_(torch.as_tensor(fit.intercept_, dtype=torch.float32))
        return model.eval()

    return make
