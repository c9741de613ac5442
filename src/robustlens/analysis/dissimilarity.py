"""Representational dissimilarity between clean and adversarial activations (study S1).

For each image and layer, ``d = 1 - r`` where r is the Pearson correlation between the
flattened clean and adversarial activations of that layer. ``d`` is 0 for identical
patterns, 1 for uncorrelated ones and 2 for anticorrelated ones. The same holds with r the
Spearman rank correlation (ties get their average rank, as in ``scipy.stats.spearmanr``) or
the cosine similarity (no centering). Values can be taken per image and layer
(:func:`dissimilarity`, :class:`LayerDissimilarity`) or per image and channel, each channel's
map flattened on its own (:func:`channel_dissimilarity`, :class:`ChannelDissimilarity`).

S1's single-image curves need the values of individual images: :class:`ImageDissimilarity`
keeps them for the first ``n_images`` images of a stream (memory proportional to the images
kept). Layers where ``1 - r`` is undefined (a constant activation: r is 0 / 0) or exactly 0
(clean and adversarial activations identical, or an exact affine function of each other;
``|1 - r| <= 1e-12``, float64 rounding)
are the S1 "dips"; :func:`flag_layers` and the per-image ``flag`` / ``reason`` columns name
them with their cause. robustlens records every call of a reused module and copies in-place
outputs (:mod:`robustlens.activations`), so a flagged zero is a property of the network and
the perturbation, not an artifact of the recorder.
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
    "ImageDissimilarity",
    "LayerDissimilarity",
    "channel_dissimilarity",
    "dissimilarity",
    "flag_layers",
    "pearson_dissimilarity",
    "rank_rows",
]

DissimilarityMetric = Literal["pearson", "spearman", "cosine"]
_METRICS = ("pearson", "spearman", "cosine")
_ZERO = 1e-12  # |1 - r| at or below this counts as exactly 0 (float64 rounding of r = 1)


def rank_rows(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based, float64) along the last dimension; ties get their average rank.

    One sort per row (in the input's own dtype, whose order equals float64's; on a CPU by
    NumPy's argsort), then linear passes: each run of equal sorted values gets the mean of its first and last position.
    """
    x = x.detach().contiguous()
    if not x.is_floating_point():
        x = x.double()
    n = x.shape[-1]
    if n == 0:
        return torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    if x.device.type == "cpu":  # NumPy's vectorised argsort is several times torch's on a CPU
        order = torch.from_numpy(np.argsort(x.numpy(), axis=-1))
        ordered = x.gather(-1, order)
    else:
        ordered, order = x.sort(dim=-1)
    pos = torch.arange(n, device=x.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    del ordered
    first = torch.where(starts, pos, 0).cummax(dim=-1).values
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    del starts
    last = torch.where(ends, pos, n).flip(-1).cummin(dim=-1).values.flip(-1)
    del ends
    mean_rank = (first + last).double().add_(2.0).mul_(0.5)  # 1-based: ((first+1) + (last+1)) / 2
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)


def _check_pair(clean: torch.Tensor, adversarial: torch.Tensor) -> None:
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial activations differ in shape: "
                              f"{tuple(clean.shape)} vs {tuple(adversarial.shape)}")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise RobustlensError(f"metric must be one of {', '.join(_METRICS)}; received {metric!r}.")


def _one_minus_r(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """``1 - r`` between matching rows of two (R, n) tensors; NaN where r is undefined."""
    if metric == "spearman":  # ranked in the activations' own dtype (same order as float64)
        a, b = rank_rows(a), rank_rows(b)
    a, b = a.detach().double(), b.detach().double()
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
    """Per-layer float64 sums ``[n, sum, sum of squares, n_undefined, n_zero]`` (per channel or not):
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
        """Sums over images (dim 0) of the defined values of ``d``, shape ``d.shape[1:] + (5,)``."""
        ok = ~torch.isnan(d)
        dv = torch.where(ok, d, torch.zeros_like(d)).double()
        return torch.stack([ok.sum(0).double(), dv.sum(0), (dv * dv).sum(0), (~ok).sum(0).double(),
                            (ok & (dv.abs() <= _ZERO)).sum(0).double()], dim=-1).cpu()

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
        def widened(v: torch.Tensor) -> torch.Tensor:  # states written before n_zero was kept
            v = v.clone().double()
            return torch.cat([v, torch.zeros_like(v[..., :1])], dim=-1) if v.shape[-1] == 4 else v

        self._order, self._stats = list(state), {k: widened(v) for k, v in state.items()}


class LayerDissimilarity(_LayerSums):
    """Streaming mean and standard error of :func:`dissimilarity` per layer.

    Keeps, per layer, the count, sum and sum of squares (float64) of the defined values, the
    count of undefined ones (a constant activation, e.g. an all-zero ReLU map) and of exact
    zeros, so its memory does not grow with the number of images.

    Args:
        metric: ``"pearson"`` (the S1 measure), ``"spearman"`` or ``"cosine"``.
    """

    def update(self, clean: Mapping[str, torch.Tensor],
               adversarial: Mapping[str, torch.Tensor]) -> None:
        """Add one batch: ``clean`` and ``adversarial`` map layer name -> (B, ...) activation."""
        for layer, a in self._pairs(clean, adversarial).items():
            self._add(layer, self._sums(dissimilarity(a, adversarial[layer], self.metric)))

    def result(self) -> pd.DataFrame:
        """One row per layer: ``layer, layer_index, n_images, mean, std, sem, n_undefined,
        n_zero`` (``n_images`` counts the defined values; :func:`flag_layers` adds the flags)."""
        rows = []
        for i, layer in enumerate(self._order):
            n, s, ss, und, zero = self._stats[layer].tolist()
            mean, std, sem = _summary(n, s, ss)
            rows.append({"layer": layer, "layer_index": i, "n_images": int(n), "mean": mean,
                         "std": std, "sem": sem, "n_undefined": int(und), "n_zero": int(zero)})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "n_images", "mean", "std", "sem",
                                           "n_undefined", "n_zero"])


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
        sem, n_undefined, n_zero``."""
        rows = []
        for i, layer in enumerate(self._order):
            for c, (n, s, ss, und, zero) in enumerate(self._stats[layer].tolist()):
                mean, std, sem = _summary(n, s, ss)
                rows.append({"layer": layer, "layer_index": i, "channel": c, "n_images": int(n),
                             "mean": mean, "std": std, "sem": sem, "n_undefined": int(und),
                             "n_zero": int(zero)})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "channel", "n_images", "mean",
                                           "std", "sem", "n_undefined", "n_zero"])


_REASONS = {
    "undefined_clean": "1 - r undefined: the clean activation is constant (e.g. an all-zero ReLU map), r = 0/0",
    "undefined_adversarial": "1 - r undefined: the adversarial activation is constant, r = 0/0",
    "undefined_both": "1 - r undefined: clean and adversarial activations are both constant, r = 0/0",
    "zero_identical": "1 - r = 0: clean and adversarial activations are identical (the perturbation does "
                      "not reach this layer, or the layer removes it)",
    "zero_affine": "1 - r = 0: the adversarial activation is an exact affine function of the clean one",
}
IMAGE_COLUMNS = ["image", "layer", "layer_index", "dissimilarity", "flag", "reason"]


def _flags(clean: torch.Tensor, adversarial: torch.Tensor, d: torch.Tensor) -> list[str]:
    """Per image (rows of two (B, n) tensors), the flag of its ``1 - r`` (``""`` when regular)."""
    const_c = (clean == clean[:, :1]).all(1)
    const_a = (adversarial == adversarial[:, :1]).all(1)
    same = (clean == adversarial).all(1)
    out = []
    for k in range(d.shape[0]):
        if bool(const_c[k]) or bool(const_a[k]) or math.isnan(float(d[k])):
            out.append("undefined_both" if const_c[k] and const_a[k] else
                       "undefined_clean" if const_c[k] else "undefined_adversarial")
        elif abs(float(d[k])) <= _ZERO:
            out.append("zero_identical" if same[k] else "zero_affine")
        else:
            out.append("")
    return out


class ImageDissimilarity:
    """Per-image ``1 - r`` per layer for the first ``n_images`` images of a stream (S1's
    single-image curves), each value flagged when undefined or exactly 0.

    Images are numbered by their position in the data order (``offset`` of each batch), so
    the kept images and the table do not depend on how batches were split, resumed or
    shared between workers. Memory: one float per kept image and layer.

    Args:
        n_images: images kept (the first ones by position).
        metric: ``"pearson"`` (the S1 measure), ``"spearman"`` or ``"cosine"``.
    """

    def __init__(self, n_images: int = 8, metric: DissimilarityMetric = "pearson") -> None:
        if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
            raise RobustlensError(f"n_images must be an integer >= 1; received {n_images!r}.")
        _check_metric(metric)
        self.n_images, self.metric = n_images, metric
        self._order: list[str] = []
        self._rows: dict[str, dict[int, tuple[float, str]]] = {}

    def update(self, clean: Mapping[str, torch.Tensor], adversarial: Mapping[str, torch.Tensor],
               offset: int = 0) -> None:
        """Add a batch whose first image is image ``offset`` of the stream.

        Args:
            clean: layer name -> (B, ...) clean activations.
            adversarial: layer name -> (B, ...) adversarial activations of the same images.
            offset: position of the batch's first image in the data order.
        """
        room = self.n_images - offset
        if room <= 0:
            return
        for layer, a in _LayerSums._pairs(clean, adversarial).items():
            b = adversarial[layer]
            _check_pair(a, b)
            a, b = a[:room].detach(), b[:room].detach()
            flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
            d = _one_minus_r(flat_a, flat_b, self.metric).cpu()
            flags = _flags(flat_a, flat_b, d)
            if layer not in self._rows:
                self._order.append(layer)
                self._rows[layer] = {}
            for k in range(d.shape[0]):
                self._rows[layer][offset + k] = (float(d[k]), flags[k])

    def merge(self, other: ImageDissimilarity) -> ImageDissimilarity:
        """Add ``other``'s images (other batches of the same stream) and return this reducer."""
        for layer in other._order:
            if layer not in self._rows:
                self._order.append(layer)
                self._rows[layer] = {}
            self._rows[layer].update(other._rows[layer])
        return self

    def result(self) -> pd.DataFrame:
        """One row per kept image x layer: ``image, layer, layer_index, dissimilarity, flag,
        reason`` (``flag`` is ``""`` or one of ``undefined_clean``, ``undefined_adversarial``,
        ``undefined_both``, ``zero_identical``, ``zero_affine``; ``reason`` says it in words)."""
        rows = [{"image": image, "layer": layer, "layer_index": i, "dissimilarity": d, "flag": flag,
                 "reason": _REASONS.get(flag, "")}
                for i, layer in enumerate(self._order) for image, (d, flag) in sorted(self._rows[layer].items())]
        df = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
        return df.sort_values(["image", "layer_index"], kind="stable").reset_index(drop=True)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Per layer, a (n, 3) float64 tensor: image, value, flag code."""
        codes = ["", *_REASONS]
        return {layer: torch.tensor([[img, d, codes.index(f)] for img, (d, f) in self._rows[layer].items()],
                                    dtype=torch.float64).reshape(-1, 3)
                for layer in self._order}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        codes = ["", *_REASONS]
        self._order = list(state)
        self._rows = {layer: {int(r[0]): (float(r[1]), codes[int(r[2])]) for r in t.tolist()}
                      for layer, t in state.items()}


def flag_layers(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``flag`` and ``reason`` columns to a per-layer table (:meth:`LayerDissimilarity.result`).

    ``flag`` is ``""`` for a regular layer, ``"undefined"`` when 1 - r is undefined for every
    image, ``"partly_undefined"`` when for some, ``"zero"`` when it is exactly 0 for every
    image with a defined value; ``reason`` explains it.

    Args:
        table: rows with ``n_images`` (defined values), ``n_undefined`` and ``n_zero`` columns.

    Returns:
        A copy of ``table`` with the two columns added.
    """
    missing = {"n_images", "n_undefined", "n_zero"} - set(table.columns)
    if missing:
        raise RobustlensError(f"the table lacks columns {sorted(missing)}; pass LayerDissimilarity.result().")
    flags, reasons = [], []
    for n, und, zero in zip(table["n_images"], table["n_undefined"], table["n_zero"], strict=True):
        if n == 0 and und > 0:
            flags.append("undefined")
            reasons.append(f"1 - r undefined for all {und} images: a constant activation (e.g. an all-zero "
                           "ReLU map), r = 0/0")
        elif n > 0 and zero == n:
            flags.append("zero")
            reasons.append(f"1 - r = 0 for all {n} images: clean and adversarial activations identical (or "
                           "exactly affine): the perturbation does not reach this layer")
        elif und > 0:
            flags.append("partly_undefined")
            reasons.append(f"1 - r undefined for {und} of {n + und} images (constant activations); the mean "
                           "is over the others")
        else:
            flags.append("")
            reasons.append("")
    return table.assign(flag=flags, reason=reasons)
