"""Datasets: Fashion-MNIST (IDX files), scikit-learn's digits, ImageNet-style folders, synthetic images,
balanced subsets."""

from __future__ import annotations

from pathlib import Path

from robustlens.data.classes import ClassSpec, classes_present, resolve_class, resolve_classes, select_classes
from robustlens.data.dataset import Dataset, ImageDataset, to_memory
from robustlens.data.digits import load_digits
from robustlens.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist
from robustlens.data.imagenet import ClassMode, ImageFolder, imagenet_wnids, load_imagenet
from robustlens.data.subset import class_balanced_indices
from robustlens.data.synthetic import SyntheticImages
from robustlens.errors import DataError, suggest

__all__ = [
    "DATASETS",
    "ClassSpec",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "ImageDataset",
    "ImageFolder",
    "SyntheticImages",
    "class_balanced_indices",
    "classes_present",
    "find_fashion_mnist",
    "imagenet_wnids",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "to_memory",
    "load_imagenet",
    "resolve_class",
    "resolve_classes",
    "select_classes",
]

DATASETS = ("fashion_mnist", "digits", "imagenet")


def load_dataset(name: str, split: str = "test", root: str | Path | None = None, *,
                 resize: int = 256, crop: int = 224, classes: ClassSpec = None,
                 seed: int = 0) -> Dataset:
    """Load a dataset by name (``"fashion_mnist"``, ``"digits"`` or ``"imagenet"``) and split.

    ``imagenet`` is an ImageNet-style folder tree at ``root`` (read lazily, resized so the
    shorter side is ``resize``, then centre-cropped to ``crop``); see :mod:`robustlens.data.imagenet`.
    Folders named by ImageNet-1k WordNet ids keep the 1000-class indices and names, whichever
    of them are present; with ``classes="folders"``, folders named otherwise are read too, as
    classes 0, 1, ... in sorted order.

    Args:
        name: ``"fashion_mnist"``, ``"digits"`` or ``"imagenet"``.
        split: ``"train"``, ``"test"`` (``"val"`` for ImageNet), or ``"all"`` for digits.
        root: where the files are (ImageNet: the folder holding the splits).
        resize: ImageNet: side the shorter image side is resized to, pixels.
        crop: ImageNet: side of the central square crop, pixels.
        classes: a class selection (:func:`select_classes`): a number of classes to draw, a
            list of WordNet ids / indices / names, ``"folders"`` or ``None`` (all).
        seed: seed of a random class draw.
    """
    data: Dataset
    if name == "imagenet":
        if root is None:
            raise DataError("the imagenet dataset needs a root folder: set [data].root (or --data-root) to "
                            "the folder holding train/ and val/.")
        # "folders" also reads class folders that are not ImageNet WordNet ids (as classes 0, 1, ...)
        mode: ClassMode = "auto" if isinstance(classes, str) and classes == "folders" else "imagenet"
        data = load_imagenet(root, split, resize=resize, crop=crop, classes=mode)
    elif name == "fashion_mnist":
        data = load_fashion_mnist(split, root)
    elif name == "digits":
        data = load_digits(split)
    else:
        raise DataError(f"unknown dataset {name!r}.{suggest(name, DATASETS)} Known: {', '.join(DATASETS)}.")
    return data if classes is None else select_classes(data, classes, seed)
