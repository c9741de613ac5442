"""The Fashion-MNIST VOneNet and the Gabor-bank figure."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from robustlens.data import ImageDataset
from robustlens.models import create_model, model_info
from robustlens.models.vone import VOneBlock, VOneNet, without_noise
from robustlens.models.vone.plot import plot_gabor_bank


@pytest.fixture(scope="module")
def model() -> VOneNet:
    torch.manual_seed(0)
    m = create_model("vone_fmnist_cnn")
    assert isinstance(m, VOneNet)
    return m


def test_geometry_and_shapes(model):
    block = model.vone_block
    assert isinstance(block, VOneBlock)
    assert (block.in_channels, block.out_channels, block.ksize, block.stride) == (1, 64, 17, 2)
    assert block.image_size / block.visual_degrees == pytest.approx(28 / 1.5)
    assert block.gabor_params["sf"].max() < 5.6  # sf_max 6: finest carrier 0.3 cycles/px
    info = model_info("vone_fmnist_cnn")
    assert info.input_size == (1, 28, 28) and info.stochastic and info.mean == (0.5,)
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    with torch.no_grad():
        v1 = block(model.normalize(x))
        assert v1.shape == (5, 64, 14, 14)
        assert model.bottleneck(v1).shape == (5, 16, 14, 14)
    # The back-end is fmnist_cnn's second stage and classifier.
    reference = create_model("fmnist_cnn")
    assert model.model.classifier[0].weight.shape == reference.classifier[0].weight.shape


def test_gradients_and_noise(model):
    x = torch.zeros(2, 1, 28, 28, requires_grad=True)  # an all-black image
    model(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        y = torch.rand(2, 1, 28, 28)
        assert not torch.equal(model(y), model(y))  # stochastic, also in eval mode
        with without_noise(model):
            assert torch.equal(model(y), model(y))


def test_mean_activation_is_near_one(fashion_mnist_test: ImageDataset, model):
    with torch.no_grad(), without_noise(model):
        act = model.vone_block(model.normalize(fashion_mnist_test.images[:500]))
    assert 0.6 < act.mean().item() < 1.6


def test_learns_fashion_mnist_quickly(fashion_mnist_test: ImageDataset):
    """A short run on part of the test split (the demo trains 3 epochs on the train split)."""
    from robustlens.training import TrainConfig, evaluate_accuracy, train_model

    data = fashion_mnist_test
    train = ImageDataset(data.images[:4000], data.labels[:4000], data.class_names, "fmnist-part")
    held = ImageDataset(data.images[8000:], data.labels[8000:], data.class_names, "fmnist-held")
    torch.manual_seed(0)
    m = create_model("vone_fmnist_cnn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread avoids OpenMP barrier costs
    try:
        train_model(m, train, TrainConfig(epochs=2, batch_size=64, lr=3e-3))
        accuracy = evaluate_accuracy(m, held)
    finally:
        torch.set_num_threads(threads)
    assert accuracy > 0.7


def test_plot_gabor_bank(model):
    fig = plot_gabor_bank(model.vone_block, max_filters=16, columns=4, order="frequency")
    assert isinstance(fig, Figure)
    assert sum(ax.has_data() for ax in fig.axes) == 16
    rgb = VOneBlock(4, 4, ksize=9, image_size=64, visual_degrees=2.0)
    fig = plot_gabor_bank(rgb, bank="q1")
    assert sum(ax.has_data() for ax in fig.axes) == 8
