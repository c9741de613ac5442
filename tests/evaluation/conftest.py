"""Fixtures of the evaluation tests: a small trained CNN on the digits."""

import pytest
import torch


@pytest.fixture(scope="session")
def digits_model():
    """digits_cnn trained for a few seconds on the digits train split (about 96% test)."""
    import robustlens
    from robustlens.data import load_digits
    from robustlens.training import TrainConfig, train_model

    torch.manual_seed(0)
    model = robustlens.create_model("digits_cnn")
    train_model(model, load_digits("train"), TrainConfig(epochs=15, batch_size=64, lr=5e-3))
    return model.eval()


@pytest.fixture(scope="session")
def digits_test():
    from robustlens.data import load_digits

    return load_digits("test")
