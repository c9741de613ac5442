"""VOneNets: a simulated primary visual cortex (V1) in front of a CNN.

Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo (2020), *Simulating a Primary Visual Cortex
at the Front of CNNs Improves Robustness to Image Perturbations*, NeurIPS 33. Normative
description: ``shared/specs/vonenet.md``. Registered models: ``vone_resnet50`` (also
``_ns``, ``_at``), ``vone_alexnet``, ``vone_cornet_s``, ``vone_fmnist_cnn``.
"""

from typing import Any

from robustlens.models.vone._backends import (
    RESNET_ARCHITECTURES,
    AlexNetBackEnd,
    ResNetBackEnd,
    no_inplace,
)
from robustlens.models.vone._block import (
    NOISE_MODES,
    GaborBank,
    NoiseMode,
    VOneBlock,
    without_noise,
)
from robustlens.models.vone._kernel import gabor_bank, gabor_kernel
from robustlens.models.vone._loading import (
    check_gabor_banks,
    detect_gabor_provenance,
    load_vonenet,
    save_reference_checkpoint,
)
from robustlens.models.vone._params import GaborParameters, sample_gabor_parameters
from robustlens.models.vone._vonenet import VONE_MEAN, VONE_STD, VOneNet, vone_resnet, vonenet
from robustlens.models.vone.fmnist import FMNIST_VONE_OPTIONS, FashionMNISTBackEnd, vone_fmnist_cnn

__all__ = [
    "FMNIST_VONE_OPTIONS",
    "NOISE_MODES",
    "RESNET_ARCHITECTURES",
    "VONE_MEAN",
    "VONE_STD",
    "AlexNetBackEnd",
    "FashionMNISTBackEnd",
    "GaborBank",
    "GaborParameters",
    "NoiseMode",
    "ResNetBackEnd",
    "VOneBlock",
    "VOneNet",
    "check_gabor_banks",
    "detect_gabor_provenance",
    "gabor_bank",
    "gabor_kernel",
    "load_vonenet",
    "no_inplace",
    "plot_gabor_bank",
    "sample_gabor_parameters",
    "save_reference_checkpoint",
    "vone_fmnist_cnn",
    "vone_resnet",
    "vonenet",
    "without_noise",
]


def __getattr__(name: str) -> Any:
    """Import the matplotlib figure helper only when it is used."""
    if name == "plot_gabor_bank":
        from robustlens.models.vone.plot import plot_gabor_bank

        return plot_gabor_bank
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
