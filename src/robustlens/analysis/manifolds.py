"""Class activation manifolds: how many dimensions a class occupies at a layer (study S3).

For the m images of one class, stack a layer's activations into an (m, D) matrix and take
the eigenvalues lambda_1 >= ... >= lambda_D of its covariance (the PCA variances). Then

- the **manifold dimension** at threshold t is the number of principal components needed to
  explain more than a fraction t of the variance (t = 0.95 by default): the smallest k with
  (lambda_1 + ... + lambda_k) / sum(lambda) > t, as scikit-learn's ``PCA(n_components=t)``
  chooses it. A class whose activations are all identical has dimension 0;
- the **participation ratio** is (sum lambda)^2 / sum(lambda^2) (Gao et al. 2017), a
  threshold-free effective dimension between 1 and D.

The thesis behind S3 found ResNet50's penultimate-layer class manifolds to have about 40
dimensions, and lower dimensions for classes with higher PGD accuracy; correlate the two with
:func:`robustlens.analysis.correlate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from robustlens.errors import RobustlensError

__all__ = [
    "ClassManifolds",
    "dimension_from_variances",
    "manifold_dimension",
    "participation_ratio",
    "pca_variances",
]


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise RobustlensError(f"threshold must lie in (0, 1), e.g. 0.95; received {threshold}.")


def pca_variances(acts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Variances along the principal components of n stimuli's activations.

    Args:
        acts: (n_stimuli, n_features) or (n_stimuli, ...) (flattened per stimulus).

    Returns:
        (min(n_stimuli, n_features),) float64, in decreasing order: the eigenvalues of the
        covariance matrix (with n - 1 in the denominator, as scikit-learn's
        ``PCA.explained_variance_``).
    """
    x = torch.as_tensor(np.asarray(acts) if not isinstance(acts, torch.Tensor) else acts.detach())
    if x.ndim < 2 or x.shape[0] < 2:
        raise RobustlensError(f"activations must be (n_stimuli, n_features) with at least 2 "
                              f"stimuli; received shape {tuple(x.shape)}.")
    x = x.reshape(x.shape[0], -1).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    return (s * s / (x.shape[0] - 1)).cpu()


def dimension_from_variances(variances: torch.Tensor, threshold: float = 0.95) -> int:
    """Components needed to explain more than ``threshold`` of the variance.

    Args:
        variances: (k,) principal-component variances in any order (negative round-off is
            treated as 0).
        threshold: fraction of the total variance, in (0, 1).
    """
    _check_threshold(threshold)
    v = variances.double().clamp_min(0.0).sort(descending=True).values
    total = float(v.sum())
    if total <= 0.0:
        return 0
    ratio = torch.cumsum(v, 0) / total
    k = int(torch.searchsorted(ratio, torch.tensor([threshold], dtype=torch.float64), right=True))
    return min(k + 1, len(v))


def manifold_dimension(acts: torch.Tensor | np.ndarray, threshold: float = 0.95) -> int:
    """The PCA dimension of n stimuli's activations at a variance ``threshold``.

    Args:
        acts: (n_stimuli, n_features), e.g. one class's penultimate-layer activations.
        threshold: fraction of the variance to explain, in (0, 1).

    Returns:
        The number of components, as ``sklearn.decomposition.PCA(threshold).n_components_``.
    """
    _check_threshold(threshold)
    return dimension_from_variances(pca_variances(acts), threshold)


def _participation(variances: torch.Tensor) -> float:
    v = variances.double().clamp_min(0.0)
    denom = float((v * v).sum())
    return float(v.sum()) ** 2 / denom if denom > 0 else math.nan


def participation_ratio(acts: torch.Tensor | np.ndarray) -> float:
    """(sum lambda)^2 / sum(lambda^2) of the covariance eigenvalues; NaN for zero variance.

    Args:
        acts: (n_stimuli, n_features).
    """
    return _participation(pca_variances(acts))


class ClassManifolds:
    """Streaming per-class covariances and manifold dimensions at one or more layers.

    Keeps, per layer and class, the image count, the sum (D,) and the sum of outer products
    (D, D) of the flattened activations, in float64 on the activations' device: memory
    ``n_classes x D^2`` per layer (32 MiB per class for ResNet50's 2048-d penultimate
    layer), independent of the number of images.

    Args:
        n_classes: number of classes (labels 0 .. n_classes - 1).
        threshold: variance fraction of the manifold dimension.
        class_names: optional, one per class.
        max_features: refuse layers with more features than this (a D x D covariance per
            class); pool or choose a smaller layer instead.
    """

    def __init__(self, n_classes: int, threshold: float = 0.95,
                 class_names: Sequence[str] | None = None, max_features: int = 8192) -> None:
        _check_threshold(threshold)
        if class_names is not None and len(class_names) != n_classes:
            raise RobustlensError(f"{len(class_names)} class names for {n_classes} classes.")
        self.n_classes, self.threshold, self.max_features = int(n_classes), threshold, max_features
        self.class_names = None if class_names is None else tuple(class_names)
        self._order: list[str] = []
        self._n: dict[str, torch.Tensor] = {}  # (K,)
        self._s1: dict[str, torch.Tensor] = {}  # (K, D)
        self._s2: dict[str, torch.Tensor] = {}  # (K, D, D)

    def update(self, activations: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add a batch: layer name -> (B, ...) activations and (B,) integer labels."""
        for layer, a in activations.items():
            if a.shape[0] != labels.shape[0]:
                raise RobustlensError(f"layer {layer!r} has {a.shape[0]} images but "
                                      f"{labels.shape[0]} labels.")
            x = a.detach().reshape(a.shape[0], -1).double()
            d = x.shape[1]
            if d > self.max_features:
                raise RobustlensError(
                    f"layer {layer!r} has {d} features per image; a per-class covariance needs "
                    f"{d}x{d} values. Choose a layer with at most {self.max_features} features "
                    "(e.g. the penultimate one) or raise max_features.")
            lab = labels.to(x.device).long()
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.n_classes):
                raise RobustlensError(f"labels must lie in [0, {self.n_classes}); received "
                                      f"[{int(lab.min())}, {int(lab.max())}].")
            self._ensure(layer, d, x.device)
            self._n[layer] += torch.bincount(lab, minlength=self.n_classes).to(torch.float64)
            self._s1[layer].index_add_(0, lab, x)
            for c in torch.unique(lab).tolist():
                xc = x[lab == c]
                self._s2[layer][c] += xc.T @ xc

    def _ensure(self, layer: str, d: int, device: torch.device) -> None:
        if layer in self._n:
            if self._s1[layer].shape[1] != d:
                raise RobustlensError(f"layer {layer!r} has {self._s1[layer].shape[1]} features "
                                      f"here and {d} there.")
            return
        self._order.append(layer)
        k, f64 = self.n_classes, torch.float64
        self._n[layer] = torch.zeros(k, dtype=f64, device=device)
        self._s1[layer] = torch.zeros(k, d, dtype=f64, device=device)
        self._s2[layer] = torch.zeros(k, d, d, dtype=f64, device=device)

    def merge(self, other: ClassManifolds) -> ClassManifolds:
        """Add ``other``'s sums into this reducer (in place) and return it."""
        if other.n_classes != self.n_classes:
            raise RobustlensError(f"cannot merge reducers of {self.n_classes} and "
                                  f"{other.n_classes} classes.")
        for layer in other._order:
            self._ensure(layer, other._s1[layer].shape[1], other._s1[layer].device)
            dev = self._n[layer].device
            self._n[layer] += other._n[layer].to(dev)
            self._s1[layer] += other._s1[layer].to(dev)
            self._s2[layer] += other._s2[layer].to(dev)
        return self

    @property
    def layers(self) -> list[str]:
        return list(self._order)

    def covariance(self, layer: str, label: int) -> torch.Tensor:
        """(D, D) float64 covariance (denominator n - 1) of class ``label`` at ``layer``."""
        if layer not in self._n:
            raise RobustlensError(f"layer {layer!r} has not been seen; seen: {self._order[:10]}")
        n = float(self._n[layer][label])
        if n < 2:
            raise RobustlensError(f"class {label} has {int(n)} image(s) at {layer!r}; a covariance "
                                  "needs at least 2.")
        mean = self._s1[layer][label] / n
        cov = (self._s2[layer][label] - n * torch.outer(mean, mean)) / (n - 1)
        return ((cov + cov.T) / 2).cpu()

    def variances(self, layer: str, label: int) -> torch.Tensor:
        """Principal-component variances of class ``label`` at ``layer``, decreasing."""
        return torch.linalg.eigvalsh(self.covariance(layer, label)).flip(0).clamp_min(0.0)

    def result(self) -> pd.DataFrame:
        """One row per layer x class with at least 2 images.

        Columns: ``layer, layer_index, class, class_name, n_images, n_features, dimension``
        (components for ``threshold`` of the variance), ``threshold, participation_ratio,
        total_variance`` (trace of the covariance, in squared activation units).
        """
        rows = []
        for i, layer in enumerate(self._order):
            counts = self._n[layer].cpu()
            for c in range(self.n_classes):
                if counts[c] < 2:
                    continue
                v = self.variances(layer, c)
                rows.append({
                    "layer": layer, "layer_index": i, "class": c,
                    "class_name": self.class_names[c] if self.class_names else str(c),
                    "n_images": int(counts[c]), "n_features": int(self._s1[layer].shape[1]),
                    "dimension": dimension_from_variances(v, self.threshold),
                    "threshold": self.threshold, "participation_ratio": _participation(v),
                    "total_variance": float(v.sum())})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "class", "class_name",
                                           "n_images", "n_features", "dimension", "threshold",
                                           "participation_ratio", "total_variance"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for layer in self._order:
            state[f"{layer}|n"] = self._n[layer].cpu().clone()
            state[f"{layer}|s1"] = self._s1[layer].cpu().clone()
            state[f"{layer}|s2"] = self._s2[layer].cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._order, self._n, self._s1, self._s2 = [], {}, {}, {}
        parts = {"n": self._n, "s1": self._s1, "s2": self._s2}
        for key, value in state.items():
            layer, _, part = key.rpartition("|")
            if layer not in self._order:
                self._order.append(layer)
            parts[part][layer] = value.clone().double()
