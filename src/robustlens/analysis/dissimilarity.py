"""Representational dissimilarity between clean and adversarial activations (study S1).

For each image and layer, ``d = 1 - r`` where r is the Pearson correlation between the
flattened clean and adversarial activations of that layer. ``d`` is 0 for identical
patterns, 1 for uncorrelated ones and 2 for anticorrelated ones. The same holds with r the
Spearman rank correlation (ties get their average rank, as in ``scipy.stats.spearmanr``) or
the cosine similarity (no centering). Values can be taken per image and layer
(:func:`dissimilarity`, :class:`LayerDissimilarity`) or per image and channel, each channel's
map flattened on its own (:func:`channel_dissimilarity`, :class:`ChannelDissimilarity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, Self

import numpy as np
import pandas as pd
import torch

from robustlens.errors import RobustlensError

__all__ = [
    "ChannelDissimilarity",
    "DissimilarityMetric",
    "LayerDissimilarity",
    "channel_dissimilarity",
    "dissimilarity",
    "pearson_dissimilarity",
    "rank_rows",
]

DissimilarityMetric = Literal["pearson", "spearman", "cosine"]
_METRICS = ("pearson", "spearman", "cosine")


def rank_rows(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based, float64) along the last dimension; ties get their average rank."""
    x = x.double().contiguous()
    ordered = x.sort(dim=-1).values
    below = torch.searchsorted(ordered, x, right=False)
    upto = torch.searchsorted(ordered, x, right=True)
    return (below + upto + 1).double() / 2.0


def _check_pair(clean: torch.Tensor, adversarial: torch.Tensor) -> None:
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial activations differ in shape: "
                              f"{tuple(clean.shape)} vs {tuple(adversarial.shape)}")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise RobustlensError(f"metric must be one of {', '.join(_METRICS)}; received {metric!r}.")


def _one_minus_r(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """``1 - r`` between matching rows of two (R, n) tensors; NaN where r is undefined."""
    a, b = a.detach().double(), b.detach().double()
    if metric == "spearman":
        a, b = rank_rows(a), rank_rows(b)
    if metric != "cosine":
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    saa, sbb = (a * a).sum(-1), (b * b).sum(-1)
    r = (a * b).sum(-1) / torch.sqrt(saa * sbb)
    r = torch.where((saa > 0) & (sbb > 0), r.clamp(-1.0, 1.0), torch.full_like(r, math.nan))
    return 1.0 - r


def dissimilarity(clean: torch.Tensor | np.ndarray, adversarial: torch.Tensor | np.ndarray,
                  metric: DissimilarityMetric = "pearson") -> torch.Tensor:
    """``1 - r`` between the flattened activations of each image.

    Args:
        clean: (B, ...) activations of a layer (a tensor or an array).
        adversarial: (B, ...) activations of the same layer.
        metric: ``"pearson"``, ``"spearman"`` or ``"cosine"``.

    Returns:
        (B,) float64; NaN where r is undefined (a constant activation for Pearson and
        Spearman, an all-zero one for cosine).
    """
    clean, adversarial = torch.as_tensor(clean), torch.as_tensor(adversarial)
    _check_pair(clean, adversarial)
    _check_metric(metric)
    return _one_minus_r(clean.reshape(clean.shape[0], -1), adversarial.reshape(clean.shape[0], -1),
                        metric)


def pearson_dissimilarity(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """``1 - Pearson r`` between the flattened activations of each image.

    Args:
        clean: (B, ...) activations of a layer.
        adversarial: (B, ...) activations of the same layer.

    Returns:
        (B,) float64; NaN where either activation is constant (r undefined).
    """
    return dissimilarity(clean, adversarial, "pearson")


def channel_dissimilarity(clean: torch.Tensor | np.ndarray,
                          adversarial: torch.Tensor | np.ndarray,
                          metric: DissimilarityMetric = "pearson") -> torch.Tensor:
    """``1 - r`` between the clean and adversarial maps of each image and channel.

    Args:
        clean: (B, C, ...) activations; each channel's positions are flattened on their
            own (a (B, C) activation has one position per channel, so r is undefined
            there: use :func:`dissimilarity`).
        adversarial: (B, C, ...) activations of the same shape.
        metric: ``"pearson"``, ``"spearman"`` or ``"cosine"``.

    Returns:
        (B, C) float64; NaN where r is undefined (e.g. a channel that is zero everywhere).
    """
    clean, adversarial = torch.as_tensor(clean), torch.as_tensor(adversarial)
    _check_pair(clean, adversarial)
    _check_metric(metric)
    if clean.ndim < 3:
        raise RobustlensError(f"per-channel dissimilarity needs (B, C, ...) maps with positions; "
                              f"received shape {tuple(clean.shape)}.")
    b, c = clean.shape[:2]
    return _one_minus_r(clean.reshape(b, c, -1), adversarial.reshape(b, c, -1), metric)


def _summary(n: float, s: float, ss: float) -> tuple[float, float, float]:
    mean = s / n if n else math.nan
    var = max(ss - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
    std = math.sqrt(var) if n > 1 else math.nan
    return mean, std, (std / math.sqrt(n) if n > 1 else math.nan)


class _LayerSums:
    """Per-layer float64 sums ``[n, sum, sum of squares, n_undefined]`` (per channel or not):
    the state both dissimilarity reducers keep, add, merge and checkpoint."""

    def __init__(self, metric: DissimilarityMetric = "pearson") -> None:
        _check_metric(metric)
        self.metric = metric
        self._order: list[str] = []
        self._stats: dict[str, torch.Tensor] = {}

    @staticmethod
    def _pairs(clean: Mapping[str, torch.Tensor], adversarial: Mapping[str, torch.Tensor]
               ) -> Mapping[str, torch.Tensor]:
        missing = [k for k in clean if k not in adversarial]
        if missing:
            raise RobustlensError(f"layers recorded on clean but not on adversarial images: "
                                  f"{missing[:5]}")
        return clean

    @staticmethod
    def _sums(d: torch.Tensor) -> torch.Tensor:
        """Sums over images (dim 0) of the defined values of ``d``, shape ``d.shape[1:] + (4,)``."""
        ok = ~torch.isnan(d)
        dv = torch.where(ok, d, torch.zeros_like(d)).double()
        return torch.stack([ok.sum(0).double(), dv.sum(0), (dv * dv).sum(0), (~ok).sum(0).double()],
                           dim=-1).cpu()

    def _add(self, layer: str, table: torch.Tensor) -> None:
        if layer not in self._stats:
            self._order.append(layer)
            self._stats[layer] = torch.zeros_like(table, dtype=torch.float64)
        elif self._stats[layer].shape != table.shape:
            raise RobustlensError(f"layer {layer!r} has {self._stats[layer].shape[0]} channels "
                                  f"here and {table.shape[0]} there.")
        self._stats[layer] += table

    def merge(self, other: Self) -> Self:
        """Add ``other``'s sums into this reducer (in place) and return it."""
        for layer in other._order:
            self._add(layer, other._stats[layer])
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {layer: self._stats[layer].clone() for layer in self._order}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._order, self._stats = list(state), {k: v.clone().double() for k, v in state.items()}


class LayerDissimilarity(_LayerSums):
    """Streaming mean and standard error of :func:`dissimilarity` per layer.

    Keeps, per layer, the count, sum and sum of squares (float64) of the defined values and
    the count of undefined ones (a constant activation, e.g. an all-zero ReLU map), so its
    memory does not grow with the number of images.

    Args:
        metric: ``"pearson"`` (the S1 measure), ``"spearman"`` or ``"cosine"``.
    """

    def update(self, clean: Mapping[str, torch.Tensor],
               adversarial: Mapping[str, torch.Tensor]) -> None:
        """Add one batch: ``clean`` and ``adversarial`` map layer name -> (B, ...) activation."""
        for layer, a in self._pairs(clean, adversarial).items():
            self._add(layer, self._sums(dissimilarity(a, adversarial[layer], self.metric)))

    def result(self) -> pd.DataFrame:
        """One row per layer: ``layer, layer_index, n_images, mean, std, sem, n_undefined``."""
        rows = []
        for i, layer in enumerate(self._order):
            n, s, ss, und = self._stats[layer].tolist()
            mean, std, sem = _summary(n, s, ss)
            rows.append({"layer": layer, "layer_index": i, "n_images": int(n), "mean": mean,
                         "std": std, "sem": sem, "n_undefined": int(und)})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "n_images", "mean", "std", "sem",
                                           "n_undefined"])


class ChannelDissimilarity(_LayerSums):
    """Streaming mean and standard error of :func:`channel_dissimilarity` per layer x channel.

    Keeps, per layer, a (C, 4) float64 table: count, sum and sum of squares of the defined
    values and the count of undefined ones. Layers recorded as (B, D) vectors are skipped
    (per-channel r is undefined for them).

    Args:
        metric: ``"pearson"``, ``"spearman"`` or ``"cosine"``.
    """

    def update(self, clean: Mapping[str, torch.Tensor],
               adversarial: Mapping[str, torch.Tensor]) -> None:
        """Add one batch: ``clean`` and ``adversarial`` map layer name -> (B, C, ...)."""
        for layer, a in self._pairs(clean, adversarial).items():
            if a.ndim >= 3:
                self._add(layer, self._sums(channel_dissimilarity(a, adversarial[layer], self.metric)))

    def result(self) -> pd.DataFrame:
        """One row per layer x channel: ``layer, layer_index, channel, n_images, mean, std,
        sem, n_undefined``."""
        rows = []
        for i, layer in enumerate(self._order):
            for c, (n, s, ss, und) in enumerate(self._stats[layer].tolist()):
                mean, std, sem = _summary(n, s, ss)
                rows.append({"layer": layer, "layer_index": i, "channel": c, "n_images": int(n),
                             "mean": mean, "std": std, "sem": sem, "n_undefined": int(und)})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "channel", "n_images", "mean",
                                           "std", "sem", "n_undefined"])
