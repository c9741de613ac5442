"""Fixtures of the attack tests: the closed-form models and a small trained CNN."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


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
