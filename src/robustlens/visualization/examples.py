"""Dataset examples: the images (and image patches) that most strongly activate a unit.

:class:`DatasetExamples` is a streaming reducer: ``update(images)`` batch by batch, one pass
over a dataset, keeping only the current top-k images; ``merge`` combines shards;
``result()`` returns the top-k images, their values, the position of each one's maximum and
the receptive-field crop around it. The receptive field is measured, not derived from the
architecture: the bounding box of the input pixels with a non-zero gradient of the unit at
that position, over a few random probe images (:func:`receptive_field`), so it works for
any model, including pooling, padding and strided or dilated convolutions.

:func:`dataset_examples` runs the reducers of several units over any dataset (the embedded
train or test splits, or an ImageNet folder read lazily batch by batch) in one pass: one
forward per batch for all units, only the current top-k images kept in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robustlens.activations.layers import ChannelRef
from robustlens.data.dataset import Dataset
from robustlens.errors import RobustlensError
from robustlens.models import model_device
from robustlens.visualization._hooks import capture, check_images, module_training
from robustlens.visualization.objectives import parse_unit

__all__ = ["DatasetExamples", "ExampleSet", "dataset_examples", "receptive_field"]


def receptive_field(model: nn.Module, layer: str, position: tuple[int, ...],
                    image_shape: tuple[int, int, int], *, n_probes: int = 8,
                    seed: int = 0) -> tuple[int, int, int, int]:
    """The input box that the activation of ``layer`` at ``position`` depends on.

    Args:
        model: the model.
        layer: call name of the layer.
        position: (y, x) in the layer's activation map (``()`` for a (B, C) vector: the whole
            image).
        image_shape: (C, H, W) of the inputs.
        n_probes: uniform random images whose gradient supports are united.
        seed: seeds the probes.

    Returns:
        (top, left, bottom, right) pixel box, bottom and right exclusive.
    """
    c, h, w = image_shape
    if len(position) == 0:
        return 0, 0, h, w
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n_probes, c, h, w), generator=gen).to(device).requires_grad_(True)
    with module_training(model, False), torch.enable_grad():
        _, acts = capture(model, x, [layer], need_output=False)
        a = acts[layer]
        unit = a[(slice(None), slice(None), *(int(p) for p in position))]  # type: ignore[index]
        (g,) = torch.autograd.grad(unit.sum(), x)
    support = (g != 0).any(0).any(0)
    if not bool(support.any()):
        return 0, 0, h, w
    rows = support.any(1).nonzero()[:, 0]
    cols = support.any(0).nonzero()[:, 0]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


@dataclass(frozen=True)
class ExampleSet:
    """The top-k dataset examples of one unit, strongest first.

    Attributes:
        unit: the channel (``"layer#C"``).
        images: (k, C, H, W) the images, pixels in [0, 1] (CPU).
        values: (k,) the unit's maximum over positions in each image (activation units).
        indices: (k,) the images' indices: their dataset indices when ``update`` was given
            them, else their positions in the stream of ``update`` calls.
        positions: (k, 2) (y, x) of the maximum in the activation map (empty columns for a
            (B, C) vector layer).
        boxes: (k, 4) receptive-field boxes (top, left, bottom, right) in pixels.
        crops: k tensors (C, h, w): each image cut to its box.
    """

    unit: str
    images: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    crops: tuple[torch.Tensor, ...]


class DatasetExamples:
    """Streaming top-k images of a unit over a dataset.

    Args:
        model: the model (its modes are set to eval while it runs, then restored).
        unit: ``"layer#C"`` or Lucent's ``"layer:C"``.
        k: examples to keep.
    """

    def __init__(self, model: nn.Module, unit: str | ChannelRef, k: int = 9) -> None:
        if k < 1:
            raise RobustlensError(f"k must be >= 1; received {k}.")
        self.model, self.ref, self.k = model, parse_unit(unit), k
        self.n_seen = 0
        self._explicit = False  # indices given by the caller (dataset indices), not stream positions
        self._images: torch.Tensor | None = None
        self._values = torch.zeros(0, dtype=torch.float64)
        self._indices = torch.zeros(0, dtype=torch.long)
        self._positions = torch.zeros(0, 0, dtype=torch.long)

    def update(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> DatasetExamples:
        """Add a batch; returns ``self``.

        Args:
            images: (B, C, H, W) pixels in [0, 1].
            indices: (B,) the images' dataset indices; default their positions in the stream.
        """
        check_images(images)
        with module_training(self.model, False), torch.no_grad():
            _, acts = capture(self.model, images, [self.ref.layer], need_output=False)
        return self.update_activation(acts[self.ref.layer], images, indices)

    def update_activation(self, activation: torch.Tensor, images: torch.Tensor,
                          indices: torch.Tensor | None = None) -> DatasetExamples:
        """Add a batch whose activations of the unit's layer were recorded already.

        Args:
            activation: (B, C, ...) output of the unit's layer for ``images``.
            images: (B, C, H, W) the images, pixels in [0, 1].
            indices: (B,) the images' dataset indices; default their positions in the stream.
        """
        if indices is not None and len(indices) != len(images):
            raise RobustlensError(f"indices must hold one index per image ({len(images)}); received {len(indices)}.")
        a = self.ref.select(activation).detach()
        flat = a.reshape(a.shape[0], -1)
        values, where = flat.max(1)
        if a.ndim > 1:
            pos = torch.stack(torch.unravel_index(where, a.shape[1:]), 1)
        else:
            pos = torch.zeros(a.shape[0], 0, dtype=torch.long, device=a.device)
        idx = torch.arange(self.n_seen, self.n_seen + len(images)) if indices is None \
            else torch.as_tensor(indices).long().cpu()
        self._explicit = self._explicit or indices is not None
        self.n_seen += len(images)
        self._add(images.detach().cpu(), values.double().cpu(), idx, pos.cpu())
        return self

    def _add(self, images: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
             positions: torch.Tensor) -> None:
        if self._images is not None:
            images = torch.cat([self._images, images])
            values = torch.cat([self._values, values])
            indices = torch.cat([self._indices, indices])
            positions = torch.cat([self._positions, positions])
        # ties: the earlier image wins (stable order by index)
        order = sorted(range(len(values)), key=lambda i: (-float(values[i]), int(indices[i])))
        keep = torch.tensor(order[: self.k], dtype=torch.long)
        self._images, self._values = images[keep].clone(), values[keep]
        self._indices, self._positions = indices[keep], positions[keep]

    def merge(self, other: DatasetExamples) -> DatasetExamples:
        """Combine with a reducer that saw another shard (its stream positions are offset by
        ours; dataset indices given to ``update`` are kept as they are)."""
        if other.ref != self.ref:
            raise RobustlensError(f"cannot merge examples of {other.ref} into {self.ref}.")
        if other._images is not None:
            offset = 0 if (self._explicit or other._explicit) else self.n_seen
            self._add(other._images, other._values, other._indices + offset, other._positions)
        self._explicit = self._explicit or other._explicit
        self.n_seen += other.n_seen
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The kept images, values, indices and positions, and the counts (tensors only)."""
        state = {"n_seen": torch.tensor(self.n_seen), "explicit": torch.tensor(self._explicit)}
        if self._images is not None:
            state.update(images=self._images, values=self._values, indices=self._indices,
                         positions=self._positions)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`."""
        self.n_seen, self._explicit = int(state["n_seen"]), bool(state["explicit"])
        if "images" in state:
            self._images, self._values = state["images"], state["values"]
            self._indices, self._positions = state["indices"], state["positions"]

    def result(self, *, n_probes: int = 8) -> ExampleSet:
        """The top-k examples with their receptive-field crops."""
        if self._images is None:
            raise RobustlensError("no images seen yet; call update() first.")
        shape = tuple(self._images.shape[1:])
        boxes, crops = [], []
        cache: dict[tuple[int, ...], tuple[int, int, int, int]] = {}
        for img, pos in zip(self._images, self._positions, strict=True):
            key = tuple(int(p) for p in pos)
            if key not in cache:
                cache[key] = receptive_field(self.model, self.ref.layer, key,
                                             shape, n_probes=n_probes)  # type: ignore[arg-type]
            t, left, b, r = cache[key]
            boxes.append(cache[key])
            crops.append(img[:, t:b, left:r].clone())
        return ExampleSet(str(self.ref), self._images, self._values, self._indices,
                          self._positions, torch.tensor(boxes, dtype=torch.long), tuple(crops))


def dataset_examples(model: nn.Module, units: Sequence[str | ChannelRef], data: Dataset, *, k: int = 9,
                     batch_size: int = 64, n_images: int | None = None, seed: int = 0,
                     device: torch.device | str | None = None, n_probes: int = 8) -> list[ExampleSet]:
    """The top-k dataset examples of several units, in one streaming pass over ``data``.

    Works for any dataset of :mod:`robustlens.data` — the embedded Fashion-MNIST or digits
    (``load_dataset(name, "train")`` for the training images, as in the CSC413 lecture, or
    ``"test"``) and ImageNet folders, whose images are decoded batch by batch (memory: one
    batch plus the k kept images per unit).

    Args:
        model: the model (eval mode while it runs; restored afterwards).
        units: ``"layer#C"`` (or Lucent's ``"layer:C"``) addresses.
        data: the dataset.
        k: examples per unit.
        batch_size: images per forward pass.
        n_images: look at this many images, drawn without replacement with ``seed``
            (a 1.2M-image ImageNet train split needs a bound); ``None`` for all.
        seed: seed of that draw.
        device: where the model runs; default the model's device.
        n_probes: probe images of the receptive-field measurement.

    Returns:
        One :class:`ExampleSet` per unit, in ``units`` order; ``indices`` are dataset indices.
    """
    if not units:
        raise RobustlensError("dataset_examples needs at least one unit ('layer#channel').")
    if batch_size < 1 or (n_images is not None and n_images < 1):
        raise RobustlensError(f"batch_size and n_images must be >= 1; received {batch_size} and {n_images}.")
    reducers = [DatasetExamples(model, u, k=k) for u in units]
    layers = list(dict.fromkeys(r.ref.layer for r in reducers))
    if device is None:
        device = model_device(model)
    n = len(data)
    if n_images is not None and n_images < n:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_images].sort().values
    else:
        order = torch.arange(n)
    with module_training(model, False), torch.no_grad():
        for chunk in order.split(batch_size):
            images, _ = data.get_batch(chunk)
            images = images.to(device)
            _, acts = capture(model, images, layers, need_output=False)
            for r in reducers:
                r.update_activation(acts[r.ref.layer], images, chunk)
    return [r.result(n_probes=n_probes) for r in reducers]
