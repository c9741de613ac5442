"""Shared fixtures: real small data, tiny trained models, a quiet 2-thread torch."""

from __future__ import annotations

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
