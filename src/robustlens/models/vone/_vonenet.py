"""VOneNets: ``Normalize -> VOneBlock -> 1x1 bottleneck -> back-end CNN`` (spec section 10)."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from robustlens.errors import ConfigError
from robustlens.models._registry import ModelInfo, register_model
from robustlens.models.normalize import Normalize
from robustlens.models.vone._backends import make_back_end
from robustlens.models.vone._block import NoiseMode, VOneBlock

__all__ = ["VONE_MEAN", "VONE_STD", "VOneNet", "vone_resnet", "vonenet"]

VONE_MEAN = (0.5, 0.5, 0.5)
VONE_STD = (0.5, 0.5, 0.5)
PAPER = ("Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo (2020), Simulating a Primary "
         "Visual Cortex at the Front of CNNs Improves Robustness to Image Perturbations, "
         "NeurIPS 33")
LICENSE = "MIT (this implementation); released weights: see dicarlolab/vonenet"


class VOneNet(nn.Sequential):
    """``normalize -> vone_block -> bottleneck -> model``: pixels in [0, 1] -> logits.

    The names ``vone_block``, ``bottleneck`` and ``model`` are the reference's, so a
    checkpoint's keys map one-to-one after removing ``module.``; ``normalize`` is
    stateless (no keys). Nothing follows the bottleneck (no BN, no ReLU).

    Args:
        block: the V1 front-end.
        model: the back-end, taking ``bottleneck_channels`` channels.
        bottleneck_channels: output channels of the 1x1 bottleneck (64 for the standard
            back-ends, the width their stem produced).
        mean: input normalisation mean (0.5 with std 0.5 maps pixels to [-1, 1]).
        std: input normalisation standard deviation.
        arch: architecture id kept as metadata (``arch_params["arch"]``).
    """

    def __init__(self, block: VOneBlock, model: nn.Module, bottleneck_channels: int = 64,
                 mean: tuple[float, ...] = VONE_MEAN, std: tuple[float, ...] = VONE_STD,
                 arch: str = "") -> None:
        bottleneck = nn.Conv2d(block.out_channels, bottleneck_channels, 1, bias=False)
        nn.init.kaiming_normal_(bottleneck.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(OrderedDict([
            ("normalize", Normalize(mean, std)),
            ("vone_block", block),
            ("bottleneck", bottleneck),
            ("model", model),
        ]))
        self.image_size = block.image_size
        self.visual_degrees = block.visual_degrees
        self.arch_params = {"k_exc": block.k_exc, "arch": arch, "ksize": block.ksize,
                            "stride": block.stride}

    @property
    def gabor_params(self) -> dict[str, Any]:
        """The block's Gabor metadata (see :class:`VOneBlock`)."""
        block = self.vone_block
        assert isinstance(block, VOneBlock)
        return block.gabor_params

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the released checkpoints' layout (keys prefixed ``module.``)."""
        return {f"module.{k}": v for k, v in self.state_dict().items()}


def vonenet(
    arch: str | nn.Module = "resnet50",
    *,
    num_classes: int = 1000,
    bottleneck_channels: int | None = None,
    **block_options: Any,
) -> VOneNet:
    """Build a VOneNet with a named back-end (or any torchvision ResNet instance).

    Args:
        arch: ``"resnet50"``, any torchvision ResNet name (``"resnet18"``, ...), ``"alexnet"``,
            ``"cornets"``, or a ``torchvision.models.ResNet`` whose stem is replaced.
        num_classes: logits (ignored for a given ResNet instance, which has its own fc).
        bottleneck_channels: output of the 1x1 bottleneck; default the back-end's stem width.
        **block_options: :class:`VOneBlock` options (defaults: the reference factory's).

    Returns:
        A :class:`VOneNet` taking (B, 3, H, W) pixels in [0, 1].
    """
    arch_id, back_end, in_channels = make_back_end(arch, num_classes)
    block = VOneBlock(**block_options)
    return VOneNet(block, back_end, bottleneck_channels or in_channels, arch=arch_id)


def vone_resnet(resnet: str | torchvision.models.ResNet = "resnet50", **options: Any) -> VOneNet:
    """Put a VOneBlock and a 1x1 bottleneck in front of any torchvision ResNet.

    The ResNet's stem (``conv1``, ``bn1``, ``relu``, ``maxpool``) is removed; the bottleneck
    maps the V1 channels to the stem's width (64), at 1/4 of the input resolution.

    Args:
        resnet: a torchvision ResNet name (``"resnet18"``, ``"wide_resnet50_2"``, ...) or
            instance (e.g. with pretrained weights; its later layers are kept as they are).
        **options: as :func:`vonenet`.
    """
    if not isinstance(resnet, str | torchvision.models.ResNet):
        raise ConfigError(f"resnet must be a torchvision ResNet or its name; received "
                          f"{type(resnet).__name__}.")
    return vonenet(resnet, **options)


# --------------------------------------------------------------------------- registry
def _options_template(
    num_classes: int = 1000,
    simple_channels: int = 256,
    complex_channels: int = 256,
    k_exc: float = 25.0,
    noise_mode: NoiseMode = "neuronal",
    noise_scale: float = 0.35,
    noise_level: float = 0.07,
    gabor_seed: int = 0,
    sf_corr: float = 0.75,
    sf_max: float = 9.0,
    sf_min: float = 0.0,
    rand_param: bool = False,
    color_seed: int = 0,
    shared_color_channel: bool = False,
    image_size: int = 224,
    visual_degrees: float = 8.0,
    ksize: int = 25,
    stride: int = 4,
) -> None:
    """Options of the registered VOneNets (the reference factory's defaults)."""


def _register(name: str, arch: str, description: str, **defaults: Any) -> None:
    signature = inspect.signature(_options_template)
    params = [p.replace(default=defaults.get(p.name, p.default))
              for p in signature.parameters.values()]

    def constructor(**options: Any) -> nn.Module:
        merged = {p.name: p.default for p in params}
        merged.update(options)
        num_classes = merged.pop("num_classes")
        return vonenet(arch, num_classes=num_classes, **merged)

    def loader(path: Path, build: Callable[..., nn.Module], options: dict[str, Any], *,
               allow_pickle: bool = False) -> nn.Module:
        from robustlens.models.vone._loading import load_vonenet

        merged = {p.name: p.default for p in params}
        merged.update(options)
        return load_vonenet(path, arch=arch, allow_pickle=allow_pickle, **merged)

    constructor.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params],
        return_annotation=nn.Module)
    constructor.__name__ = name
    constructor.__doc__ = (
        f"{description}.\n\nOptions: see :class:`robustlens.models.vone.VOneBlock`. "
        "``create_model(name, weights=PATH)`` loads a released checkpoint (spec 10.5), whose "
        "flags then set the block.")
    info = ModelInfo(name=name, input_size=(3, 224, 224), num_classes=1000, mean=VONE_MEAN,
                     std=VONE_STD, dataset="imagenet", description=description, paper=PAPER,
                     license=LICENSE, stochastic=defaults.get("noise_mode", "neuronal") is not None,
                     extra={"arch": arch})
    register_model(info, weights_loader=loader)(constructor)


_register("vone_resnet50", "resnet50",
          "VOneResNet50: V1 front-end (512 Gabor channels, neuronal noise) + ResNet-50")
_register("vone_resnet50_ns", "resnet50",
          "VOneResNet50 without stochasticity (voneresnet50_ns_e70)", noise_mode=None)
_register("vone_resnet50_at", "resnet50",
          "VOneResNet50, adversarially trained release (voneresnet50_at_e96)")
_register("vone_alexnet", "alexnet", "VOneAlexNet: V1 front-end + modified AlexNet")
_register("vone_cornet_s", "cornets", "VOneCORnet-S: V1 front-end + CORnet-S V2/V4/IT")
