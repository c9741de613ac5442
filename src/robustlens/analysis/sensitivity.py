"""Sensitivity of neurons, channels and layers to adversarial perturbations (study S2).

For a feature F (a neuron, a channel or a whole layer) and N clean / adversarial image pairs
(x_i, x'_i)::

    sigma(F) = (1/N) * sum_i (1/dim F) * || F(x_i) - F(x'_i) ||_1

the mean absolute change of the feature's activation, normalised by its size: dim F is 1 for
a neuron, H x W for a channel of a (C, H, W) map (1 for a unit of a (D,) vector) and the whole
activation size for a layer. Units are those of the activation itself. A layer untouched by
the perturbation has sigma = 0. The most sensitive channels (``top_k_channels``) are the
units to visualise with activation maximization; their ``unit`` column is the
``"layer#channel"`` address (:mod:`robustlens.activations.layers`). Neuron-level rankings
(one value per element of the activation, not per channel) come from
:meth:`ChannelSensitivity.neuron_result` and :func:`top_k_neurons`; ``classes`` restricts
the image pairs to chosen classes (S2's "flamingos").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch

from robustlens.activations.layers import format_channel
from robustlens.errors import RobustlensError

__all__ = ["ChannelSensitivity", "SensitivityLevel", "sensitivity", "top_k_channels", "top_k_neurons"]

SensitivityLevel = Literal["neuron", "channel", "layer"]

_CHANNEL_COLUMNS = ["layer", "layer_index", "channel", "unit", "n_images", "sensitivity", "std",
                    "sem"]
_NEURON_COLUMNS = ["layer", "layer_index", "neuron", "channel", "position", "unit", "n_images",
                   "sensitivity"]
_LAYER_COLUMNS = ["layer", "layer_index", "n_channels", "n_features", "n_images", "sensitivity",
                  "std", "sem"]


def _abs_change(clean: torch.Tensor | np.ndarray,
                adversarial: torch.Tensor | np.ndarray) -> torch.Tensor:
    clean, adversarial = torch.as_tensor(clean), torch.as_tensor(adversarial)
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial activations differ in shape: "
                              f"{tuple(clean.shape)} vs {tuple(adversarial.shape)}")
    if clean.ndim < 2:
        raise RobustlensError(f"activations must be (B, ...) with at least one feature dimension; "
                              f"received shape {tuple(clean.shape)}.")
    return (clean.detach() - adversarial.detach()).abs()


def _channel_maps(x: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C, P) with P positions per channel (1 for a (B, D) vector)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def sensitivity(clean: torch.Tensor | np.ndarray, adversarial: torch.Tensor | np.ndarray,
                level: SensitivityLevel = "neuron") -> torch.Tensor:
    """The S2 sensitivity of every feature of one layer over a set of image pairs.

    Args:
        clean: (N, ...) activations of a layer for the N clean images, e.g. (N, C, H, W) or
            (N, D); an (n_stimuli, n_features) matrix works directly.
        adversarial: (N, ...) activations of the same layer for their N adversarial pairs.
        level: ``"neuron"`` (each element), ``"channel"`` (index 1, averaged over the
            remaining positions) or ``"layer"`` (everything).

    Returns:
        float64 tensor: (...) per neuron, (C,) per channel or () for the layer.
    """
    diff = _abs_change(clean, adversarial)
    if diff.shape[0] == 0:
        raise RobustlensError("sensitivity needs at least one image pair; received none.")
    if level == "neuron":
        return diff.sum(0, dtype=torch.float64) / diff.shape[0]
    if level == "channel":
        per_map = _channel_maps(diff)
        return per_map.sum((0, 2), dtype=torch.float64) / (per_map.shape[0] * per_map.shape[2])
    if level == "layer":
        return diff.sum(dtype=torch.float64) / diff.numel()
    raise RobustlensError(f"level must be 'neuron', 'channel' or 'layer'; received {level!r}.")


class ChannelSensitivity:
    """Streaming S2 sensitivity per channel and per layer (optionally per neuron).

    Per layer it keeps (float64, on the activations' device): the number of images, per
    channel the sum and sum of squares over images of the per-image channel value, the same
    for the per-image layer value and, with ``neurons=True``, the per-neuron sum of absolute
    changes (one value per element of the activation). Memory does not grow with the number
    of images.

    With ``classes``, only the image pairs whose true label is one of them count (the
    labels are then passed to :meth:`update`): the result equals that of the unfiltered
    reducer fed only those images.

    Args:
        neurons: also keep per-neuron sums (``neuron_sensitivity``, ``neuron_result``); costs
            one float64 per element of each layer's activation.
        classes: class indices whose images count; ``None`` for every image.
    """

    def __init__(self, neurons: bool = False, classes: Sequence[int] | None = None) -> None:
        self.neurons = neurons
        if classes is not None:
            if isinstance(classes, str | bytes) or not all(
                    isinstance(c, int | np.integer) and not isinstance(c, bool) and c >= 0 for c in classes):
                raise RobustlensError(f"classes must be a list of class indices (integers >= 0); "
                                      f"received {classes!r}.")
            if len(classes) == 0:
                raise RobustlensError("classes must name at least one class index, or be None for all.")
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self._reset()

    def _reset(self) -> None:
        self._order: list[str] = []
        self._n: dict[str, torch.Tensor] = {}  # () image count
        self._channel: dict[str, torch.Tensor] = {}  # (2, C): sum, sum of squares
        self._layer: dict[str, torch.Tensor] = {}  # (2,): sum, sum of squares
        self._neuron: dict[str, torch.Tensor] = {}  # (*F) sum of |change|
        self._shape: dict[str, tuple[int, ...]] = {}

    def update(self, clean: Mapping[str, torch.Tensor],
               adversarial: Mapping[str, torch.Tensor], labels: torch.Tensor | None = None) -> None:
        """Add a batch: both map layer name -> (B, ...) activation of the same images.

        Args:
            clean: layer name -> (B, ...) activations of the clean images.
            adversarial: layer name -> (B, ...) activations of their adversarial pairs.
            labels: (B,) true classes; required when the reducer has ``classes``.
        """
        missing = [k for k in clean if k not in adversarial]
        if missing:
            raise RobustlensError(f"layers recorded on clean but not on adversarial images: "
                                  f"{missing[:5]}")
        keep: torch.Tensor | None = None
        if self.classes is not None:
            if labels is None:
                raise RobustlensError("this sensitivity is restricted to classes "
                                      f"{list(self.classes)}: pass the batch's labels to update().")
            chosen = torch.tensor(self.classes, device=labels.device)
            keep = torch.isin(labels, chosen)
        for layer, a in clean.items():
            b = adversarial[layer]
            if keep is not None:
                if a.shape[0] != keep.shape[0]:
                    raise RobustlensError(f"layer {layer!r} has {a.shape[0]} rows but {keep.shape[0]} labels.")
                a, b = a[keep.to(a.device)], b[keep.to(b.device)]
            diff = _abs_change(a, b)
            if diff.shape[0] == 0:
                continue
            shape = tuple(diff.shape[1:])
            if layer in self._shape and self._shape[layer] != shape:
                raise RobustlensError(f"layer {layer!r} changed shape from {self._shape[layer]} to "
                                      f"{shape} between batches.")
            maps = _channel_maps(diff)
            per_channel = maps.sum(2, dtype=torch.float64) / maps.shape[2]  # (B, C)
            per_image = per_channel.mean(1)  # (B,)
            stats_c = torch.stack([per_channel.sum(0), (per_channel * per_channel).sum(0)])
            stats_l = torch.stack([per_image.sum(), (per_image * per_image).sum()])
            n = torch.tensor(float(diff.shape[0]), dtype=torch.float64, device=diff.device)
            neuron = diff.sum(0, dtype=torch.float64) if self.neurons else None
            self._add(layer, shape, n, stats_c, stats_l, neuron)

    def _add(self, layer: str, shape: tuple[int, ...], n: torch.Tensor, stats_c: torch.Tensor,
             stats_l: torch.Tensor, neuron: torch.Tensor | None) -> None:
        if layer not in self._shape:
            self._order.append(layer)
            self._shape[layer] = shape
            self._n[layer] = torch.zeros_like(n)
            self._channel[layer] = torch.zeros_like(stats_c)
            self._layer[layer] = torch.zeros_like(stats_l)
            if neuron is not None:
                self._neuron[layer] = torch.zeros_like(neuron)
        device = self._n[layer].device
        self._n[layer] += n.to(device)
        self._channel[layer] += stats_c.to(device)
        self._layer[layer] += stats_l.to(device)
        if neuron is not None and layer in self._neuron:
            self._neuron[layer] += neuron.to(device)

    def merge(self, other: ChannelSensitivity) -> ChannelSensitivity:
        """Add ``other``'s sums into this reducer (in place) and return it."""
        for layer in other._order:
            if layer in self._shape and self._shape[layer] != other._shape[layer]:
                raise RobustlensError(f"cannot merge: layer {layer!r} has shape "
                                      f"{self._shape[layer]} here and {other._shape[layer]} there.")
            self._add(layer, other._shape[layer], other._n[layer], other._channel[layer],
                      other._layer[layer], other._neuron.get(layer) if self.neurons else None)
        return self

    @staticmethod
    def _moments(n: float, s: torch.Tensor, ss: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = s / n if n else torch.full_like(s, math.nan)
        if n > 1:
            std = ((ss - n * mean * mean).clamp_min(0) / (n - 1)).sqrt()
            return mean, std, std / math.sqrt(n)
        nan = torch.full_like(s, math.nan)
        return mean, nan, nan

    def result(self) -> pd.DataFrame:
        """One row per layer x channel.

        Columns: ``layer, layer_index, channel, unit`` (the ``"layer#channel"`` address),
        ``n_images, sensitivity`` (sigma), ``std`` and ``sem`` (of the per-image values).
        """
        frames = []
        for i, layer in enumerate(self._order):
            n = float(self._n[layer])
            s, ss = self._channel[layer].cpu()
            mean, std, sem = self._moments(n, s, ss)
            c = len(mean)
            frames.append(pd.DataFrame({
                "layer": [layer] * c, "layer_index": i, "channel": range(c),
                "unit": [format_channel(layer, k) for k in range(c)], "n_images": int(n),
                "sensitivity": mean.numpy(), "std": std.numpy(), "sem": sem.numpy()}))
        if not frames:
            return pd.DataFrame(columns=_CHANNEL_COLUMNS)
        return pd.concat(frames, ignore_index=True)[_CHANNEL_COLUMNS]

    def layer_result(self) -> pd.DataFrame:
        """One row per layer: ``layer, layer_index, n_channels, n_features, n_images,
        sensitivity, std, sem`` (sigma of the whole layer and the spread of its per-image
        values)."""
        rows = []
        for i, layer in enumerate(self._order):
            n = float(self._n[layer])
            mean, std, sem = self._moments(n, *self._layer[layer].cpu())
            shape = self._shape[layer]
            rows.append({"layer": layer, "layer_index": i, "n_channels": shape[0],
                         "n_features": math.prod(shape), "n_images": int(n),
                         "sensitivity": float(mean), "std": float(std), "sem": float(sem)})
        return pd.DataFrame(rows, columns=_LAYER_COLUMNS)

    def neuron_sensitivity(self, layer: str) -> torch.Tensor:
        """Per-neuron sigma of ``layer``: float64, shaped like one image's activation."""
        if not self.neurons:
            raise RobustlensError("per-neuron sums were not kept; use "
                                  "ChannelSensitivity(neurons=True).")
        if layer not in self._neuron:
            raise RobustlensError(f"layer {layer!r} has not been seen; seen: {self._order[:10]}")
        return (self._neuron[layer] / self._n[layer]).cpu()

    def neuron_result(self, k: int | None = None) -> pd.DataFrame:
        """One row per neuron (element of the activation), optionally only the ``k`` most
        sensitive of each layer.

        Columns: ``layer, layer_index, neuron`` (flat index into one image's activation),
        ``channel`` (index 1 of the activation), ``position`` (flat index within that
        channel's positions; 0 for a vector), ``unit`` (the channel's ``"layer#channel"``
        address), ``n_images, sensitivity``. Rank them with :func:`top_k_neurons`.

        Args:
            k: neurons kept per layer (the most sensitive); ``None`` keeps every neuron.
        """
        if not self.neurons:
            raise RobustlensError("per-neuron sums were not kept; use ChannelSensitivity(neurons=True).")
        if k is not None and k < 1:
            raise RobustlensError(f"k must be >= 1 or None; received {k}.")
        frames = []
        for i, layer in enumerate(self._order):
            if layer not in self._neuron:
                continue
            values = self.neuron_sensitivity(layer).flatten()
            positions = math.prod(self._shape[layer][1:])
            index = torch.arange(values.numel()) if k is None else \
                values.argsort(descending=True, stable=True)[:k]
            channel = (index // positions).numpy()
            frames.append(pd.DataFrame({
                "layer": layer, "layer_index": i, "neuron": index.numpy(), "channel": channel,
                "position": (index % positions).numpy(),
                "unit": [format_channel(layer, c) for c in channel], "n_images": int(self._n[layer]),
                "sensitivity": values[index].numpy()}))
        if not frames:
            return pd.DataFrame(columns=_NEURON_COLUMNS)
        return pd.concat(frames, ignore_index=True)[_NEURON_COLUMNS]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for layer in self._order:
            state[f"{layer}|shape"] = torch.tensor(self._shape[layer], dtype=torch.int64)
            state[f"{layer}|n"] = self._n[layer].cpu().clone()
            state[f"{layer}|channel"] = self._channel[layer].cpu().clone()
            state[f"{layer}|layer"] = self._layer[layer].cpu().clone()
            if layer in self._neuron:
                state[f"{layer}|neuron"] = self._neuron[layer].cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._reset()
        for key, value in state.items():
            layer, _, field = key.rpartition("|")
            if field == "shape":
                self._order.append(layer)
                self._shape[layer] = tuple(int(v) for v in value.tolist())
            elif field == "n":
                self._n[layer] = value.clone().double()
            elif field == "channel":
                self._channel[layer] = value.clone().double()
            elif field == "layer":
                self._layer[layer] = value.clone().double()
            elif field == "neuron" and self.neurons:
                self._neuron[layer] = value.clone().double()


def top_k_channels(table: pd.DataFrame, k: int = 10, *, per_layer: bool = False,
                   by: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``k`` most sensitive channels, overall or per layer, in each group of a table.

    Args:
        table: :meth:`ChannelSensitivity.result` rows, possibly several concatenated with
            extra columns (``model``, ``attack``, ``eps``, ...).
        k: channels to keep per group.
        per_layer: rank within each layer instead of across all layers.
        by: grouping columns; default: every column that is not a result column (so each
            model x attack x eps is ranked separately).

    Returns:
        The selected rows, sorted by group then decreasing sensitivity, with a ``rank``
        column (1 = most sensitive).
    """
    if k < 1:
        raise RobustlensError(f"k must be >= 1; received {k}.")
    missing = {"layer", "sensitivity"} - set(table.columns)
    if missing:
        raise RobustlensError(f"the table lacks columns {sorted(missing)}; pass "
                              "ChannelSensitivity.result() rows.")
    result_columns = {*_CHANNEL_COLUMNS, *_NEURON_COLUMNS}
    groups = list(by) if by is not None else [c for c in table.columns if c not in result_columns]
    if per_layer:
        groups.append("layer")
    ranked = table.sort_values("sensitivity", ascending=False, kind="stable")
    if groups:
        ranked = ranked.groupby(groups, sort=False, dropna=False).head(k)
        ranked = ranked.assign(rank=ranked.groupby(groups, sort=False, dropna=False).cumcount() + 1)
        ranked = ranked.sort_values([*groups, "rank"], kind="stable")
    else:
        ranked = ranked.head(k).assign(rank=range(1, min(k, len(ranked)) + 1))
    return ranked.reset_index(drop=True)


def top_k_neurons(table: pd.DataFrame, k: int = 10, *, per_layer: bool = False,
                  by: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``k`` most sensitive neurons, overall or per layer, in each group of a table.

    Args:
        table: :meth:`ChannelSensitivity.neuron_result` rows, possibly several concatenated
            with extra columns (``model``, ``attack``, ``eps``, ...).
        k: neurons to keep per group.
        per_layer: rank within each layer instead of across all layers.
        by: grouping columns; default: every column that is not a result column.

    Returns:
        The selected rows, sorted by group then decreasing sensitivity, with a ``rank`` column.
    """
    if "neuron" not in table.columns:
        raise RobustlensError("the table lacks a 'neuron' column; pass ChannelSensitivity.neuron_result() rows.")
    return top_k_channels(table, k, per_layer=per_layer, by=by)
