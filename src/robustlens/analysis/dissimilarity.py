"""Representational dissimilarity between clean and adversarial activations (study S1).

For each image and layer, ``d = 1 - r`` where r is the Pearson correlation between the
flattened clean and adversarial activations of that layer. ``d`` is 0 for identical
patterns, 1 for uncorrelated ones and 2 for anticorrelated ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
import torch

from robustlens.errors import RobustlensError

__all__ = ["LayerDissimilarity", "pearson_dissimilarity"]


def pearson_dissimilarity(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """``1 - Pearson r`` between the flattened activations of each image.

    Args:
        clean, adversarial: (B, ...) activations of the same layer.

    Returns:
        (B,) float64; NaN where either activation is constant (r undefined).
    """
    if clean.shape != adversarial.shape:
        raise RobustlensError(f"clean and adversarial activations differ in shape: "
                              f"{tuple(clean.shape)} vs {tuple(adversarial.shape)}")
    a = clean.detach().reshape(clean.shape[0], -1).double()
    b = adversarial.detach().reshape(adversarial.shape[0], -1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    saa, sbb = (a * a).sum(1), (b * b).sum(1)
    r = (a * b).sum(1) / torch.sqrt(saa * sbb)
    r = torch.where((saa > 0) & (sbb > 0), r.clamp(-1.0, 1.0), torch.full_like(r, math.nan))
    return 1.0 - r


class LayerDissimilarity:
    """Streaming mean and standard error of :func:`pearson_dissimilarity` per layer.

    Keeps, per layer, the count, sum and sum of squares (float64) of the defined values and
    the count of undefined ones (a constant activation, e.g. an all-zero ReLU map), so its
    memory does not grow with the number of images.
    """

    def __init__(self) -> None:
        self._order: list[str] = []
        self._stats: dict[str, torch.Tensor] = {}  # layer -> [n, sum, sumsq, n_undefined]

    def update(self, clean: Mapping[str, torch.Tensor], adversarial: Mapping[str, torch.Tensor]) -> None:
        """Add one batch: ``clean`` and ``adversarial`` map layer name -> (B, ...) activation."""
        missing = [k for k in clean if k not in adversarial]
        if missing:
            raise RobustlensError(f"layers recorded on clean but not on adversarial images: {missing[:5]}")
        for layer, a in clean.items():
            d = pearson_dissimilarity(a, adversarial[layer]).cpu()
            ok = ~torch.isnan(d)
            dv = d[ok]
            row = torch.tensor([float(ok.sum()), float(dv.sum()), float((dv * dv).sum()),
                                float((~ok).sum())], dtype=torch.float64)
            self._add(layer, row)

    def _add(self, layer: str, row: torch.Tensor) -> None:
        if layer not in self._stats:
            self._order.append(layer)
            self._stats[layer] = torch.zeros(4, dtype=torch.float64)
        self._stats[layer] += row

    def merge(self, other: LayerDissimilarity) -> LayerDissimilarity:
        """Add ``other``'s sums into this reducer (in place) and return it."""
        for layer in other._order:
            self._add(layer, other._stats[layer])
        return self

    def result(self) -> pd.DataFrame:
        """One row per layer: ``layer, layer_index, n_images, mean, std, sem, n_undefined``."""
        rows = []
        for i, layer in enumerate(self._order):
            n, s, ss, und = self._stats[layer].tolist()
            mean = s / n if n else math.nan
            var = max(ss - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
            std = math.sqrt(var) if n > 1 else math.nan
            rows.append({"layer": layer, "layer_index": i, "n_images": int(n), "mean": mean,
                         "std": std, "sem": std / math.sqrt(n) if n > 1 else math.nan,
                         "n_undefined": int(und)})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "n_images", "mean", "std", "sem",
                                           "n_undefined"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {layer: self._stats[layer].clone() for layer in self._order}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._order, self._stats = list(state), {k: v.clone().double() for k, v in state.items()}
