"""A small residual network for Fashion-MNIST, built from torchvision's ``BasicBlock``.

Each block keeps torchvision's layout, in-place ReLU included: ONE ``relu`` module
(``nn.ReLU(inplace=True)``) runs twice per block, after ``bn1`` and after the residual sum.
That is the pattern that breaks naive activation recording (the second call overwrites the
first, and the in-place ReLU rewrites the tensor that was stored); robustlens records it as
two calls, ``layer1.0.relu`` and ``layer1.0.relu:1``, each with its own values.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from robustlens.models._registry import ModelInfo, register_model
from robustlens.models.normalize import Normalize
from robustlens.models.small_cnn import FMNIST_MEAN, FMNIST_STD

__all__ = ["FashionMNISTResNet", "GlobalAvgPool", "fmnist_resnet"]


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
    layers = [BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C): the mean over positions (a ResNet's ``avgpool`` and ``flatten`` in one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class FashionMNISTResNet(nn.Module):
    """A three-stage ResNet for (B, 1, 28, 28) pixels in [0, 1].

    ``normalize -> conv1 (3x3) -> bn1 -> relu -> maxpool (2) -> layer1 (w, 14 x 14) ->
    layer2 (2w, 7 x 7) -> layer3 (4w, 4 x 4) -> avgpool (global mean) -> fc``, where each
    ``layerN`` is ``blocks`` torchvision ``BasicBlock``s (the first of ``layer2`` and
    ``layer3`` strided, with a 1x1 ``downsample``). Module names follow torchvision's ResNet
    (``layer1.0.conv1``, ``layer1.0.relu``, ``fc``). ``avgpool`` is the penultimate layer
    and returns (B, 4w) directly (no 1 x 1 map, which per-position analyses cannot use).

    Args:
        num_classes: logits.
        width: channels of ``conv1`` and ``layer1``.
        blocks: BasicBlocks per stage.
        mean: input normalisation mean, per channel.
        std: input normalisation standard deviation, per channel.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, blocks: int = 1,
                 mean: tuple[float, ...] = FMNIST_MEAN, std: tuple[float, ...] = FMNIST_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(len(mean), width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = _stage(width, width, 1, blocks)
        self.layer2 = _stage(width, 2 * width, 2, blocks)
        self.layer3 = _stage(2 * width, 4 * width, 2, blocks)
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x))


@register_model(
    ModelInfo(
        name="fmnist_resnet",
        input_size=(1, 28, 28),
        num_classes=10,
        mean=FMNIST_MEAN,
        std=FMNIST_STD,
        dataset="fashion_mnist",
        description="small ResNet (torchvision BasicBlocks, one in-place ReLU reused per block) for 28x28 "
                    "grey images (about 0.08M parameters)",
        paper="He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition, CVPR",
        license="MIT (this model); BasicBlock: torchvision, BSD-3-Clause",
    )
)
def fmnist_resnet(num_classes: int = 10, width: int = 16, blocks: int = 1) -> nn.Module:
    """A small residual network for Fashion-MNIST (see :class:`FashionMNISTResNet`).

    Args:
        num_classes: logits.
        width: channels of the first stage (the others have 2x and 4x).
        blocks: BasicBlocks per stage.
    """
    return FashionMNISTResNet(num_classes, width, blocks)
