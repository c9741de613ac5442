"""CORnet-S: a shallow recurrent CNN mapped onto the ventral stream (V1, V2, V4, IT).

Kubilius, Schrimpf, Kar et al. (2019), *Brain-Like Object Recognition with High-Performing
Shallow Recurrent ANNs*, NeurIPS 32. Spec: ``shared/specs/vonenet.md`` section 11.
Written from the spec; the module and parameter names match the released checkpoint
``cornet_s-1d3f7974.pth`` so that it loads one-to-one (after removing ``module.``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.models._registry import ModelInfo, register_model, upgrade_state_dict
from robustlens.models._weights import check_weights_file, extract_state_dict, read_weights_file, strip_prefix
from robustlens.models.checkpoint import load_state_dict_checked
from robustlens.models.normalize import Normalize

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CORblockS", "StridedConv2d", "cornet_s",
           "cornet_s_back_end", "init_cornet_weights", "load_cornet_s"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CORNET_S_URL_HINT = (
    "Download cornet_s-1d3f7974.pth from the CORnet authors (github.com/dicarlolab/CORnet) "
    "and pass its local path."
)


class StridedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose stride can be chosen per call: ``conv(x, stride=2)``.

    The module's own ``stride`` attribute is never changed, so forward hooks, recording and
    concurrent use see one fixed module.
    """

    def forward(self, x: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        s = self.stride if stride is None else (stride, stride)
        return F.conv2d(x, self.weight, self.bias, s, self.padding, self.dilation, self.groups)


class CORblockS(nn.Module):
    """A recurrent CORnet-S block: (B, in, H, W) -> (B, out, H/2, W/2).

    ``times`` steps share their convolutions and have their own batch norms
    (``norm1_t``, ``norm2_t``, ``norm3_t``). Step 0 downsamples (conv2 with stride 2 and a
    strided 1x1 ``skip`` projection); later steps add the identity. The ``output`` identity
    module runs once per step (recorded as ``output``, ``output:1``, ...).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        times: recurrent steps.
    """

    scale = 4

    def __init__(self, in_channels: int, out_channels: int, times: int = 1) -> None:
        super().__init__()
        self.times = times
        width = out_channels * self.scale
        self.conv_input = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.skip = nn.Conv2d(out_channels, out_channels, 1, stride=2, bias=False)
        self.norm_skip = nn.BatchNorm2d(out_channels)
        self.conv1 = nn.Conv2d(out_channels, width, 1, bias=False)
        self.nonlin1 = nn.ReLU()
        self.conv2 = StridedConv2d(width, width, 3, padding=1, bias=False)
        self.nonlin2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.nonlin3 = nn.ReLU()
        self.output = nn.Identity()
        for t in range(times):
            setattr(self, f"norm1_{t}", nn.BatchNorm2d(width))
            setattr(self, f"norm2_{t}", nn.BatchNorm2d(width))
            setattr(self, f"norm3_{t}", nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_input(x)
        for t in range(self.times):
            if t == 0:
                skip = self.norm_skip(self.skip(x))
                stride = 2
            else:
                skip = x
                stride = 1
            x = self.nonlin1(getattr(self, f"norm1_{t}")(self.conv1(x)))
            x = self.nonlin2(getattr(self, f"norm2_{t}")(self.conv2(x, stride=stride)))
            x = getattr(self, f"norm3_{t}")(self.conv3(x))
            x = self.output(self.nonlin3(x + skip))
        return x


def init_cornet_weights(module: nn.Module) -> None:
    """CORnet-S initialisation: conv weights ~ N(0, 2 / (k_h k_w out)), BN weight 1, bias 0.

    Linear layers keep PyTorch's default (as in the original).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _v1_stem() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)),
        ("norm1", nn.BatchNorm2d(64)),
        ("nonlin1", nn.ReLU()),
        ("pool", nn.MaxPool2d(3, stride=2, padding=1)),
        ("conv2", nn.Conv2d(64, 64, 3, stride=1, padding=1, bias=False)),
        ("norm2", nn.BatchNorm2d(64)),
        ("nonlin2", nn.ReLU()),
        ("output", nn.Identity()),
    ]))


def _stages(num_classes: int) -> list[tuple[str, nn.Module]]:
    decoder = nn.Sequential(OrderedDict([
        ("avgpool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("linear", nn.Linear(512, num_classes)),
        ("output", nn.Identity()),
    ]))
    return [("V2", CORblockS(64, 128, times=2)), ("V4", CORblockS(128, 256, times=4)),
            ("IT", CORblockS(256, 512, times=2)), ("decoder", decoder)]


def cornet_s_back_end(num_classes: int = 1000) -> nn.Sequential:
    """CORnet-S without its V1 stem: (B, 64, 56, 56) -> (B, num_classes) logits.

    The back-end of VOneCORnet-S (spec section 10.4): ``V2``, ``V4``, ``IT``, ``decoder``.
    """
    model = nn.Sequential(OrderedDict(_stages(num_classes)))
    init_cornet_weights(model)
    return model


def load_cornet_s(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> None:
    """Load a CORnet-S checkpoint (e.g. ``cornet_s-1d3f7974.pth``) into ``model`` in place.

    Accepts the released dict (``state_dict`` saved from DataParallel, keys ``module.V1...``)
    or a bare state dict; missing ``num_batches_tracked`` entries (old PyTorch) are filled
    with 0. Keys and shapes must otherwise match exactly.

    Args:
        model: a ``cornet_s`` model.
        path: the checkpoint file.
        allow_pickle: accept files holding arbitrary Python objects (only ones you trust).
    """
    source = f"CORnet-S weights {path}"
    state = strip_prefix(extract_state_dict(
        read_weights_file(path, allow_pickle=allow_pickle, how_to_get=CORNET_S_URL_HINT), source))
    load_state_dict_checked(model, upgrade_state_dict(model, state), source)


def _load_cornet_file(path: Path, build: Callable[..., nn.Module], options: dict[str, Any], *,
                      allow_pickle: bool = False) -> nn.Module:
    """Registry loader of ``cornet_s``: the released checkpoint."""
    check_weights_file(path, how_to_get=CORNET_S_URL_HINT)  # a bad path fails before building
    model = build(**options)
    load_cornet_s(model, path, allow_pickle=allow_pickle)
    return model.eval()


@register_model(
    ModelInfo(
        name="cornet_s",
        input_size=(3, 224, 224),
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        dataset="imagenet",
        description="CORnet-S, recurrent ventral-stream CNN (V1, V2, V4, IT); weights: local file",
        paper="Kubilius et al. (2019), Brain-Like Object Recognition with High-Performing "
              "Shallow Recurrent ANNs, NeurIPS 32",
        license="MIT (this implementation); released weights: see dicarlolab/CORnet",
    ),
    weights_loader=_load_cornet_file,
)
def cornet_s(num_classes: int = 1000) -> nn.Module:
    """CORnet-S with ImageNet normalisation first: (B, 3, 224, 224) pixels -> logits.

    Modules: ``normalize``, ``V1`` (7x7/2 conv, BN, ReLU, max-pool, 3x3 conv, BN, ReLU),
    ``V2`` (times 2), ``V4`` (times 4), ``IT`` (times 2), ``decoder``; 224 -> 56 -> 28 ->
    14 -> 7 -> 1.

    ``create_model("cornet_s", weights=PATH)`` loads the released ``cornet_s-1d3f7974.pth``
    (or a compatible state dict).

    Args:
        num_classes: logits (1000 for the released weights).
    """
    model = nn.Sequential(OrderedDict([
        ("normalize", Normalize(IMAGENET_MEAN, IMAGENET_STD)),
        ("V1", _v1_stem()),
        *_stages(num_classes),
    ]))
    init_cornet_weights(model)
    return model
