"""Synthetic labelled images generated on demand: any number of images at constant memory.

For benchmarks and tests that need ImageNet-sized workloads without ImageNet: image ``i`` is
a function of ``(seed, i)`` alone, so it is the same in every batch, subset, run and process,
and nothing is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import torch

from robustlens.data.dataset import check_indices
from robustlens.errors import DataError

__all__ = ["SyntheticImages"]

_MASK63 = (1 << 63) - 1


def _image_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for image ``index`` (splitmix64's finaliser on seed and index)."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xD1B54A32D192ED03) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK63


@dataclass(frozen=True, eq=False)
class SyntheticImages:
    """``n_images`` labelled images, each generated when asked for.

    Image ``i`` of class ``c`` is a mean colour plus a sinusoidal grating whose orientation and
    spatial frequency depend on ``c`` (phase drawn per image), plus Gaussian pixel noise
    (std 0.1), clipped to [0, 1]: classes are distinguishable, images within a class differ.

    Attributes:
        n_images: images in the full set (a :meth:`subset` views some of them).
        image_shape: (C, H, W) of every image.
        num_classes: number of classes.
        seed: seed of the images (and of the labels with ``label_order="random"``).
        label_order: ``"cyclic"``: image ``i`` is of class ``i % num_classes`` (balanced);
            ``"random"``: classes drawn uniformly with ``seed``.
        name: where the images come from.
        positions: indices into the full set of the images this (sub)set holds, ``None``: all.
    """

    n_images: int
    image_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    seed: int = 0
    label_order: Literal["cyclic", "random"] = "cyclic"
    name: str = "synthetic"
    positions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.n_images < 1 or self.num_classes < 1:
            raise DataError(f"n_images and num_classes must be >= 1; received {self.n_images} and "
                            f"{self.num_classes}.")
        if len(self.image_shape) != 3 or any(int(s) < 1 for s in self.image_shape):
            raise DataError(f"image_shape must be (C, H, W) of positive sizes; received {self.image_shape}.")
        if self.label_order not in ("cyclic", "random"):
            raise DataError(f"label_order must be 'cyclic' or 'random'; received {self.label_order!r}.")

    def __len__(self) -> int:
        return self.n_images if self.positions is None else len(self.positions)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(f"class_{c}" for c in range(self.num_classes))

    @cached_property
    def _all_labels(self) -> torch.Tensor:
        if self.label_order == "cyclic":
            return torch.arange(self.n_images, dtype=torch.int64) % self.num_classes
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randint(self.num_classes, (self.n_images,), generator=generator, dtype=torch.int64)

    @property
    def labels(self) -> torch.Tensor:
        """int64 (N,), the class of each image."""
        labels = self._all_labels
        return labels if self.positions is None else labels[self.positions]

    def _global(self, indices: torch.Tensor) -> torch.Tensor:
        idx = check_indices(indices, len(self), self.name)
        return idx if self.positions is None else self.positions[idx]

    def subset(self, indices: torch.Tensor) -> SyntheticImages:
        """The images at ``indices``, in that order (nothing is generated)."""
        return replace(self, positions=self._global(indices))

    def _image(self, index: int) -> torch.Tensor:
        """Image ``index`` of the full set, float32 (C, H, W) in [0, 1]."""
        c, h, w = (int(s) for s in self.image_shape)
        label = int(self._all_labels[index])
        generator = torch.Generator().manual_seed(_image_seed(self.seed, index))
        phase = float(torch.rand((), generator=generator)) * 2 * math.pi
        noise = torch.randn((c, h, w), generator=generator) * 0.1
        angle = math.pi * ((label * 0.618034) % 1.0)  # golden-ratio steps spread the orientations
        cycles = 2.0 + (label * 7) % 5  # cycles per image side
        y = torch.linspace(0.0, 1.0, h).view(h, 1)
        x = torch.linspace(0.0, 1.0, w).view(1, w)
        grating = torch.sin(2 * math.pi * cycles * (x * math.cos(angle) + y * math.sin(angle)) + phase)
        colour = torch.tensor([0.5 + 0.2 * math.cos(2 * math.pi * (label / self.num_classes + k / c))
                               for k in range(c)]).view(c, 1, 1)
        return (colour + 0.25 * grating + noise).clamp_(0.0, 1.0)

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) float32 in [0, 1] and labels (B,) at ``indices``."""
        idx = self._global(indices)
        if not len(idx):
            return torch.empty((0, *self.image_shape)), self._all_labels[idx]
        return torch.stack([self._image(i) for i in idx.tolist()]), self._all_labels[idx]
