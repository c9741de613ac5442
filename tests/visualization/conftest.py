"""Fixtures of the visualization tests: small models, a hook counter."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def count_hooks(model: nn.Module) -> int:
    """Every forward / backward hook left on any submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="session")
def trained_fmnist_cnn(fashion_mnist_test):
    """fmnist_cnn trained for one short epoch on 4,000 test images (enough for real features)."""
    from robustlens.study.models import build_seeded
    from robustlens.training import TrainConfig, train_model

    model = build_seeded("fmnist_cnn", {}, 0)
    data = fashion_mnist_test.subset(torch.arange(4000))
    train_model(model, data, TrainConfig(epochs=1, batch_size=64, lr=3e-3))
    return model.eval()


@pytest.fixture(scope="session")
def lite0():
    from robustlens.models import create_model

    return create_model("efficientnet_lite0").eval()
