"""Small CNNs for 1 x 28 x 28 images (Fashion-MNIST)."""

from __future__ import annotations

import torch
from torch import nn

from robustlens.models._registry import ModelInfo, register_model
from robustlens.models.normalize import Normalize

__all__ = ["FMNIST_MEAN", "FMNIST_STD", "MaxPool2d", "SmallCNN", "digits_cnn", "fmnist_cnn"]

FMNIST_MEAN = (0.2860,)
FMNIST_STD = (0.3530,)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a CPU map without a gradient in channels-last layout.

    The same values (a maximum is exact); PyTorch's channels-first CPU kernel is about twice
    as slow as the whole rest of a small CNN's forward pass, which is what Square, clean
    evaluation and noise-averaged accuracy run. With a gradient the channels-first kernel is
    kept (its backward is the faster one), so gradients are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.ndim != 4 or (x.requires_grad and torch.is_grad_enabled()):
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer classifier, normalisation first.

    ``Normalize -> [conv3x3 -> ReLU -> maxpool2] x 2 -> flatten -> fc -> ReLU -> fc``.
    The block named ``features`` ends in a (B, 2*width, H/4, W/4) map;
    ``classifier.1`` (the last ReLU) is the penultimate layer.

    Args:
        in_channels: input channels.
        image_size: side of the square input, a multiple of 4.
        num_classes: number of logits.
        width: channels of the first block; the second has twice as many.
        hidden: units of the penultimate layer.
        mean: input normalisation mean, per channel.
        std: input normalisation standard deviation, per channel.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        width: int = 16,
        hidden: int = 128,
        mean: tuple[float, ...] = FMNIST_MEAN,
        std: tuple[float, ...] = FMNIST_STD,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(2 * width * (image_size // 4) ** 2, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(self.normalize(x))))


@register_model(
    ModelInfo(
        name="fmnist_cnn",
        input_size=(1, 28, 28),
        num_classes=10,
        mean=FMNIST_MEAN,
        std=FMNIST_STD,
        dataset="fashion_mnist",
        description="4-conv CNN for 28x28 grey images (about 0.2M parameters)",
    )
)
def fmnist_cnn(num_classes: int = 10, width: int = 16, hidden: int = 128) -> nn.Module:
    """The standard small CNN for Fashion-MNIST (see :class:`SmallCNN`)."""
    return SmallCNN(1, num_classes, 28, width, hidden)


DIGITS_MEAN = (0.3047,)
DIGITS_STD = (0.3784,)


@register_model(
    ModelInfo(
        name="digits_cnn",
        input_size=(1, 8, 8),
        num_classes=10,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        dataset="digits",
        description="tiny CNN for scikit-learn's 8x8 digits (fast tests and examples)",
    )
)
def digits_cnn(num_classes: int = 10, width: int = 8, hidden: int = 32) -> nn.Module:
    """A tiny :class:`SmallCNN` for scikit-learn's 8 x 8 digits."""
    return SmallCNN(1, num_classes, 8, width, hidden, DIGITS_MEAN, DIGITS_STD)
