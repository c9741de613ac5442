"""Labelled image sets: the protocol the study runner reads, and the in-memory one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from robustlens.errors import DataError

__all__ = ["Dataset", "ImageDataset", "check_indices", "to_memory"]


def check_indices(indices: torch.Tensor, n: int, name: str = "") -> torch.Tensor:
    """``indices`` as a CPU int64 1-D tensor, each in ``[0, n)``; else a :class:`DataError`."""
    idx = torch.as_tensor(indices)
    if idx.ndim != 1 or idx.is_floating_point() or idx.dtype == torch.bool or idx.is_complex():
        raise DataError(f"indices must be a 1-D integer tensor; received {idx.dtype} {tuple(idx.shape)}.")
    idx = idx.to(device="cpu", dtype=torch.int64)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        where = f" for {name!r}" if name else ""
        raise DataError(f"indices must lie in [0, {n}){where}; received values in "
                        f"[{int(idx.min())}, {int(idx.max())}].")
    return idx


@runtime_checkable
class Dataset(Protocol):
    """What the study runner needs of a dataset.

    Labels are known up front (for class-balanced subsets and sharding) while images may be
    read lazily: :meth:`get_batch` decodes only the images asked for, so a study's memory
    does not grow with the number of images. :class:`ImageDataset` holds everything in
    memory; :class:`~robustlens.data.imagenet.ImageFolder` reads JPEGs on demand.
    """

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> torch.Tensor: ...  # int64 (N,)

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def __len__(self) -> int: ...

    def subset(self, indices: torch.Tensor) -> Dataset:
        """The images at ``indices``, in that order (lazy datasets stay lazy)."""
        ...

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) at ``indices``."""
        ...


@dataclass(frozen=True)
class ImageDataset:
    """Images with labels and class names, held in memory.

    Attributes:
        images: float32 (N, C, H, W), pixels in [0, 1].
        labels: int64 (N,), class indices.
        class_names: one name per class index.
        name: where the images come from (``"fashion_mnist/test"``, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be (N, C, H, W); received {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be ({self.images.shape[0]},); received {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        """The images at ``indices``, in that order."""
        return ImageDataset(self.images[indices], self.labels[indices], self.class_names, self.name)

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``indices``."""
        return self.images[indices], self.labels[indices]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (images, labels) batches in dataset order."""
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


def to_memory(dataset: Dataset, batch_size: int = 1024) -> ImageDataset:
    """All of ``dataset``'s images in memory (itself if it is an :class:`ImageDataset`)."""
    if isinstance(dataset, ImageDataset):
        return dataset
    parts = [dataset.get_batch(torch.arange(i, min(i + batch_size, len(dataset))))
             for i in range(0, len(dataset), batch_size)]
    if not parts:
        raise DataError(f"dataset {dataset.name!r} holds no images.")
    return ImageDataset(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                        tuple(dataset.class_names), dataset.name)
