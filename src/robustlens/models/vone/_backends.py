"""Back-ends of the VOneNets: standard CNNs with their stem removed (spec 10.2-10.4)."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from robustlens.errors import ConfigError, suggest
from robustlens.models.cornet import cornet_s_back_end

__all__ = ["RESNET_ARCHITECTURES", "AlexNetBackEnd", "ResNetBackEnd", "make_back_end",
           "no_inplace"]

RESNET_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                        "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                        "wide_resnet50_2", "wide_resnet101_2")


def no_inplace(module: nn.Module) -> nn.Module:
    """Switch every in-place activation / dropout inside ``module`` to out-of-place.

    In-place ReLUs break input gradients and corrupt recorded activations (DESIGN.md);
    the numbers are unchanged.
    """
    for m in module.modules():
        if getattr(m, "inplace", False):
            m.inplace = False  # type: ignore[assignment]
    return module


class ResNetBackEnd(nn.Module):
    """A torchvision ResNet from ``layer1`` on: (B, 64, H, W) -> (B, num_classes) logits.

    The stem (``conv1``, ``bn1``, ``relu``, ``maxpool``) is removed; the remaining modules
    keep torchvision's names and initialisation, so state-dict keys read ``layer1.0.conv1``
    ... ``fc.bias``.

    Args:
        resnet: a torchvision ``ResNet`` (its stem is dropped).
    """

    def __init__(self, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.in_channels = int(resnet.conv1.out_channels)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        self.avgpool = resnet.avgpool
        self.fc = resnet.fc
        no_inplace(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class AlexNetBackEnd(nn.Module):
    """The VOneAlexNet back-end (spec 10.3): (B, 64, 56, 56) -> (B, num_classes) logits.

    torchvision's AlexNet without its first conv / ReLU / max-pool, with conv 64 -> 192 of
    stride 2, padded max-pools and a 7 x 7 adaptive average pool so that a 56 x 56 input
    ends in a 256 x 7 x 7 map (56 -> 28 -> 14 -> 14 -> 7 -> 7).

    Args:
        num_classes: logits.
        dropout: dropout probability of the classifier.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.in_channels = 64
        self.features = nn.Sequential(
            nn.Conv2d(64, 192, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def make_back_end(arch: str | nn.Module, num_classes: int = 1000) -> tuple[str, nn.Module, int]:
    """Build a back-end by name (or wrap a given torchvision ResNet).

    Args:
        arch: ``"resnet50"`` (any name in :data:`RESNET_ARCHITECTURES`), ``"alexnet"``,
            ``"cornets"`` / ``"cornet_s"``, or a torchvision ``ResNet`` instance.
        num_classes: logits.

    Returns:
        ``(arch_id, back_end, in_channels)``: the architecture id as the reference writes it
        (lower case, no underscores for CORnet-S), the module, and the channels it expects.
    """
    if isinstance(arch, torchvision.models.ResNet):
        back = ResNetBackEnd(arch)
        return "resnet", back, back.in_channels
    if not isinstance(arch, str):
        raise ConfigError("arch must be a name or a torchvision ResNet; received "
                          f"{type(arch).__name__}.")
    name = arch.lower()
    if name in RESNET_ARCHITECTURES:
        resnet = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        back = ResNetBackEnd(resnet)
        return name, back, back.in_channels
    if name == "alexnet":
        return "alexnet", AlexNetBackEnd(num_classes), 64
    if name.replace("_", "") == "cornets":
        return "cornets", cornet_s_back_end(num_classes), 64
    known = (*RESNET_ARCHITECTURES, "alexnet", "cornets")
    raise ConfigError(f"unknown VOneNet back-end {arch!r}.{suggest(name, known)} "
                      f"Known: {', '.join(known)}.")

