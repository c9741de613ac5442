"""Datasets: Fashion-MNIST (IDX files), scikit-learn's digits, ImageNet-style folders, synthetic images,
balanced subsets."""

from __future__ import annotations

from pathlib import Path

from robustlens.data.dataset import Dataset, ImageDataset, to_memory
from robustlens.data.digits import load_digits
from robustlens.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist
from robustlens.data.imagenet import ImageFolder, imagenet_wnids, load_imagenet
from robustlens.data.subset import class_balanced_indices
from robustlens.data.synthetic import SyntheticImages
from robustlens.errors import DataError, suggest

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "ImageDataset",
    "ImageFolder",
    "SyntheticImages",
    "class_balanced_indices",
    "find_fashion_mnist",
    "imagenet_wnids",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "to_memory",
    "load_imagenet",
]

DATASETS = ("fashion_mnist", "digits", "imagenet")


def load_dataset(name: str, split: str = "test", root: str | Path | None = None, *,
                 resize: int = 256, crop: int = 224) -> Dataset:
    """Load a dataset by name (``"fashion_mnist"``, ``"digits"`` or ``"imagenet"``) and split.

    ``imagenet`` is an ImageNet-style folder tree at ``root`` (read lazily, resized so the
    shorter side is ``resize``, then centre-cropped to ``crop``); see :mod:`robustlens.data.imagenet`.
    """
    if name == "imagenet":
        if root is None:
            raise DataError("the imagenet dataset needs a root folder: set [data].root (or --data-root) to "
                            "the folder holding train/ and val/.")
        return load_imagenet(root, split, resize=resize, crop=crop)
    if name == "fashion_mnist":
        return load_fashion_mnist(split, root)
    if name == "digits":
        return load_digits(split)
    raise DataError(f"unknown dataset {name!r}.{suggest(name, DATASETS)} Known: {', '.join(DATASETS)}.")
