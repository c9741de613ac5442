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
from dataclasses import dataclass, field

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


def _row_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype rows are kept in: float64 stays, every narrower type is widened exactly to float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scatter_bytes(d: int) -> int:
    """Bytes of the covariance form of one class: a float64 (D,) mean and (D, D) scatter."""
    return 8 * (d * d + d)


@dataclass
class _ClassState:
    """One class at one layer: its rows while they are cheaper, else its mean and scatter.

    Rows form: ``chunks`` of (m_i, D) activations exactly as seen (float32 or float64).
    Covariance form: ``n`` images, float64 ``mean`` (D,) and centred ``scatter`` (D, D)
    = sum (x - mean)(x - mean)^T.
    """

    n: int = 0
    chunks: list[torch.Tensor] = field(default_factory=list)
    mean: torch.Tensor | None = None
    scatter: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        if self.scatter is not None:
            assert self.mean is not None
            return self.scatter.nbytes + self.mean.nbytes
        return sum(c.nbytes for c in self.chunks)

    def rows(self) -> torch.Tensor:
        """(n, D) float64 rows (rows form only)."""
        return torch.cat([c.double() for c in self.chunks]) if len(self.chunks) != 1 \
            else self.chunks[0].double()

    def add_rows(self, x: torch.Tensor) -> None:
        if self.scatter is None:
            self.chunks.append(x)
            self.n += x.shape[0]
            d = x.shape[1]
            if self.nbytes > _scatter_bytes(d):
                self._to_scatter()
        else:
            xd = x.double()
            mean = xd.mean(0)
            centred = xd - mean
            self._combine(x.shape[0], mean, centred.T @ centred)

    def _to_scatter(self) -> None:
        x = self.rows()
        self.chunks = []
        self.mean = x.mean(0)
        centred = x - self.mean
        self.scatter = centred.T @ centred

    def _combine(self, n: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Chan et al.'s pairwise update of (n, mean, scatter) with another set's."""
        assert self.mean is not None and self.scatter is not None
        mean, scatter = mean.to(self.mean.device), scatter.to(self.scatter.device)
        total = self.n + n
        delta = mean - self.mean
        self.scatter = self.scatter + scatter + torch.outer(delta, delta) * (self.n * n / total)
        self.mean = self.mean + delta * (n / total)
        self.n = total

    def merge(self, other: _ClassState) -> None:
        if other.scatter is None:
            for chunk in other.chunks:
                self.add_rows(chunk.to(self.device) if self.device is not None else chunk)
            return
        assert other.mean is not None
        if self.scatter is None and not self.chunks:
            self.n, self.mean, self.scatter = other.n, other.mean.clone(), other.scatter.clone()
            return
        if self.scatter is None:
            self._to_scatter()
        self._combine(other.n, other.mean, other.scatter)

    @property
    def device(self) -> torch.device | None:
        if self.scatter is not None:
            return self.scatter.device
        return self.chunks[0].device if self.chunks else None

    def variances(self) -> torch.Tensor:
        """Covariance eigenvalues (denominator n - 1), decreasing, clamped at 0: min(n, D) of them
        in the rows form (from the smaller of the Gram and the scatter matrix), D otherwise."""
        if self.scatter is not None:
            scatter = (self.scatter + self.scatter.T) / 2
        else:
            x = self.rows()
            centred = x - x.mean(0)
            scatter = centred @ centred.T if x.shape[0] <= x.shape[1] else centred.T @ centred
        return (torch.linalg.eigvalsh(scatter.cpu()).flip(0) / (self.n - 1)).clamp_min(0.0)

    def covariance(self) -> torch.Tensor:
        if self.scatter is not None:
            scatter = self.scatter
        else:
            x = self.rows()
            centred = x - x.mean(0)
            scatter = centred.T @ centred
        cov = scatter.cpu() / (self.n - 1)
        return (cov + cov.T) / 2


class ClassManifolds:
    """Streaming, exact per-class PCA spectra and manifold dimensions at one or more layers.

    Memory follows the data actually seen: nothing is kept for a class (or layer) until one
    of its images arrives. Per layer and class, the activations are kept as they came, an
    (m, D) block in float32 (float64 if they came in float64), while that is smaller than the
    covariance form, a float64 mean (D,) and centred scatter matrix (D, D); the class switches
    to the covariance form once m exceeds about 2 D. For ImageNet's 50 validation images per
    class at ResNet50's 2048-d penultimate layer that is 400 KiB per class (0.4 GB for all
    1000 classes), where a covariance per class would take 32 MiB (32 GiB). Both forms give
    the exact eigenvalues (the rows' Gram matrix when m <= D), and merging is exact:
    concatenation of rows, or Chan et al.'s pairwise update of mean and scatter.

    Args:
        n_classes: number of classes (labels 0 .. n_classes - 1); absent classes cost nothing.
        threshold: variance fraction of the manifold dimension.
        class_names: optional, one per class.
        max_features: optionally refuse layers with more features than this (``None``: any
            width; the memory is then m x D per class).
    """

    def __init__(self, n_classes: int, threshold: float = 0.95,
                 class_names: Sequence[str] | None = None, max_features: int | None = None) -> None:
        _check_threshold(threshold)
        if n_classes < 1:
            raise RobustlensError(f"n_classes must be >= 1; received {n_classes}.")
        if class_names is not None and len(class_names) != n_classes:
            raise RobustlensError(f"{len(class_names)} class names for {n_classes} classes.")
        self.n_classes, self.threshold, self.max_features = int(n_classes), threshold, max_features
        self.class_names = None if class_names is None else tuple(class_names)
        self._order: list[str] = []
        self._features: dict[str, int] = {}
        self._classes: dict[str, dict[int, _ClassState]] = {}

    def _check_width(self, layer: str, d: int) -> None:
        if self.max_features is not None and d > self.max_features:
            raise RobustlensError(
                f"layer {layer!r} has {d} features per image, more than max_features="
                f"{self.max_features}. Choose a smaller layer (e.g. the penultimate one) or raise "
                "max_features.")
        if layer in self._features and self._features[layer] != d:
            raise RobustlensError(f"layer {layer!r} has {self._features[layer]} features here "
                                  f"and {d} there.")

    def _layer(self, layer: str, d: int) -> dict[int, _ClassState]:
        self._check_width(layer, d)
        if layer not in self._classes:
            self._order.append(layer)
            self._features[layer] = d
            self._classes[layer] = {}
        return self._classes[layer]

    def update(self, activations: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Add a batch.

        Args:
            activations: layer name -> (B, ...) activations (flattened per image).
            labels: (B,) integer class labels in [0, n_classes).
        """
        for layer, a in activations.items():
            if a.shape[0] != labels.shape[0]:
                raise RobustlensError(f"layer {layer!r} has {a.shape[0]} images but "
                                      f"{labels.shape[0]} labels.")
            x = a.detach().reshape(a.shape[0], -1)
            x = x.to(_row_dtype(x))
            lab = labels.to(x.device).long()
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.n_classes):
                raise RobustlensError(f"labels must lie in [0, {self.n_classes}); received "
                                      f"[{int(lab.min())}, {int(lab.max())}].")
            states = self._layer(layer, x.shape[1])
            order = torch.argsort(lab, stable=True)
            classes, counts = torch.unique_consecutive(lab[order], return_counts=True)
            for c, block in zip(classes.tolist(), torch.split(x[order], counts.tolist()),
                                strict=True):
                states.setdefault(int(c), _ClassState()).add_rows(block.clone())

    def merge(self, other: ClassManifolds) -> ClassManifolds:
        """Add ``other``'s data into this reducer (in place) and return it.

        Args:
            other: a reducer of the same number of classes.
        """
        if other.n_classes != self.n_classes:
            raise RobustlensError(f"cannot merge reducers of {self.n_classes} and "
                                  f"{other.n_classes} classes.")
        for layer in other._order:
            states = self._layer(layer, other._features[layer])
            for c, state in other._classes[layer].items():
                states.setdefault(c, _ClassState()).merge(state)
        return self

    @property
    def layers(self) -> list[str]:
        return list(self._order)

    @property
    def nbytes(self) -> int:
        """Bytes held by the reducer's tensors (rows, means and scatter matrices)."""
        return sum(s.nbytes for states in self._classes.values() for s in states.values())

    def classes(self, layer: str) -> list[int]:
        """The classes seen at ``layer``, in increasing order.

        Args:
            layer: a layer name.
        """
        return sorted(self._states(layer))

    def _states(self, layer: str) -> dict[int, _ClassState]:
        if layer not in self._classes:
            raise RobustlensError(f"layer {layer!r} has not been seen; seen: {self._order[:10]}")
        return self._classes[layer]

    def _state(self, layer: str, label: int) -> _ClassState:
        state = self._states(layer).get(int(label))
        n = 0 if state is None else state.n
        if state is None or n < 2:
            raise RobustlensError(f"class {label} has {n} image(s) at {layer!r}; a covariance "
                                  "needs at least 2.")
        return state

    def covariance(self, layer: str, label: int) -> torch.Tensor:
        """(D, D) float64 covariance (denominator n - 1) of class ``label`` at ``layer``.

        Args:
            layer: a layer name.
            label: a class index.
        """
        return self._state(layer, label).covariance()

    def variances(self, layer: str, label: int) -> torch.Tensor:
        """Principal-component variances of class ``label`` at ``layer``, decreasing.

        Args:
            layer: a layer name.
            label: a class index.

        Returns:
            (min(m, D),) float64 while the class keeps its m rows, (D,) in the covariance
            form (the extra ones are 0), as scikit-learn's ``PCA.explained_variance_``.
        """
        return self._state(layer, label).variances()

    def result(self) -> pd.DataFrame:
        """One row per layer x class with at least 2 images.

        Columns: ``layer, layer_index, class, class_name, n_images, n_features, dimension``
        (components for ``threshold`` of the variance), ``threshold, participation_ratio,
        total_variance`` (trace of the covariance, in squared activation units).
        """
        rows = []
        for i, layer in enumerate(self._order):
            states = self._classes[layer]
            for c in sorted(states):
                state = states[c]
                if state.n < 2:
                    continue
                v = state.variances()
                rows.append({
                    "layer": layer, "layer_index": i, "class": c,
                    "class_name": self.class_names[c] if self.class_names else str(c),
                    "n_images": state.n, "n_features": self._features[layer],
                    "dimension": dimension_from_variances(v, self.threshold),
                    "threshold": self.threshold, "participation_ratio": _participation(v),
                    "total_variance": float(v.sum())})
        return pd.DataFrame(rows, columns=["layer", "layer_index", "class", "class_name",
                                           "n_images", "n_features", "dimension", "threshold",
                                           "participation_ratio", "total_variance"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The data as CPU tensors, per layer: ``rows`` (R, D) and ``row_class`` (R,) of the
        classes in the rows form; ``scatter_class`` (S,), ``counts`` (S,), ``mean`` (S, D)
        and ``scatter`` (S, D, D) float64 of those in the covariance form."""
        state: dict[str, torch.Tensor] = {}
        for layer in self._order:
            d = self._features[layer]
            states = self._classes[layer]
            row_parts, row_class, sc, counts, means, scatters = [], [], [], [], [], []
            wide = any(ch.dtype == torch.float64 for s in states.values() for ch in s.chunks)
            dtype = torch.float64 if wide else torch.float32
            for c in sorted(states):
                s = states[c]
                if s.scatter is None:
                    row_parts += [ch.cpu().to(dtype) for ch in s.chunks]
                    row_class.append(torch.full((s.n,), c, dtype=torch.int64))
                else:
                    assert s.mean is not None
                    sc.append(c)
                    counts.append(s.n)
                    means.append(s.mean.cpu())
                    scatters.append(s.scatter.cpu())
            state[f"{layer}|rows"] = torch.cat(row_parts) if row_parts else torch.zeros(0, d, dtype=dtype)
            state[f"{layer}|row_class"] = (torch.cat(row_class) if row_class
                                           else torch.zeros(0, dtype=torch.int64))
            state[f"{layer}|scatter_class"] = torch.tensor(sc, dtype=torch.int64)
            state[f"{layer}|counts"] = torch.tensor(counts, dtype=torch.int64)
            state[f"{layer}|mean"] = (torch.stack(means) if means
                                      else torch.zeros(0, d, dtype=torch.float64))
            state[f"{layer}|scatter"] = (torch.stack(scatters) if scatters
                                         else torch.zeros(0, d, d, dtype=torch.float64))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the data with a :meth:`state_dict`'s (also reads the older dense layout,
        ``n`` (K,), ``s1`` (K, D), ``s2`` (K, D, D) sums per layer).

        Args:
            state: a :meth:`state_dict`.
        """
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            layer, _, part = key.rpartition("|")
            parts.setdefault(layer, {})[part] = value
        self._order, self._features, self._classes = [], {}, {}
        for layer, p in parts.items():
            if "s2" in p:  # the dense layout: sums over every class
                d = p["s1"].shape[1]
                states = self._layer(layer, d)
                for c in torch.nonzero(p["n"] > 0).flatten().tolist():
                    n = int(p["n"][c])
                    mean = p["s1"][c].double() / n
                    scatter = p["s2"][c].double() - n * torch.outer(mean, mean)
                    states[c] = _ClassState(n=n, mean=mean, scatter=scatter)
                continue
            rows = p["rows"]
            states = self._layer(layer, rows.shape[1])
            if len(rows):
                order = torch.argsort(p["row_class"], stable=True)
                classes, counts = torch.unique_consecutive(p["row_class"][order], return_counts=True)
                for c, block in zip(classes.tolist(), torch.split(rows[order], counts.tolist()),
                                    strict=True):
                    states[int(c)] = _ClassState(n=block.shape[0], chunks=[block.clone()])
            for i, c in enumerate(p["scatter_class"].tolist()):
                states[int(c)] = _ClassState(n=int(p["counts"][i]), mean=p["mean"][i].clone(),
                                             scatter=p["scatter"][i].clone())
