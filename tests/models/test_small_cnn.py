"""The small CNNs' channels-last max pooling: the values and gradients of ``nn.MaxPool2d``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlens.models.small_cnn import MaxPool2d


@pytest.mark.parametrize("shape", [(3, 4, 28, 28), (2, 1, 7, 9), (1, 16, 14, 14)])
@pytest.mark.parametrize("kernel", [2, 3])
def test_values_match_torch_without_and_with_gradient(shape, kernel):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.relu(torch.randn(shape, generator=g))  # ties at 0, as after a ReLU
    ours, ref = MaxPool2d(kernel), nn.MaxPool2d(kernel)
    with torch.inference_mode():
        out = ours(x)
        assert out.is_contiguous() and torch.equal(out, ref(x))
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w = torch.randn(ref(x).shape, generator=g)
    (ours(a) * w).sum().backward()
    (ref(b) * w).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_models_use_it_and_keep_their_layer_type():
    from robustlens.models import create_model

    for name in ("fmnist_cnn", "digits_cnn", "vone_fmnist_cnn"):
        pools = [m for m in create_model(name).modules() if isinstance(m, nn.MaxPool2d)]
        assert pools and all(isinstance(m, MaxPool2d) for m in pools)
