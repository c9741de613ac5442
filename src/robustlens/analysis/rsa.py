"""Representational similarity analysis: RDMs over stimuli and their comparison.

A representational dissimilarity matrix (RDM) holds, for n stimuli (images, or classes
through their mean activation), the n x n dissimilarities between their activation patterns
at one layer. Two RDMs (model vs model, layer vs layer, clean vs adversarial) are compared
through their upper triangles. Following rsatoolbox (Nili et al. 2014, PLoS Comput Biol),
the RDM is a data object with its measure and descriptors, and computing and comparing are
plain functions.

Dissimilarity measures (``rdm``): ``"correlation"`` 1 - Pearson r between patterns,
``"euclidean"`` the Euclidean distance (in activation units), ``"cosine"`` 1 - cosine
similarity. Comparison methods (``compare_rdms``): ``"spearman"``, ``"pearson"``,
``"kendall_tau_a"`` ((concordant - discordant pairs) / all pairs, the measure recommended by
Nili et al. for RDMs with tied entries) and ``"cosine"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.stats
import torch

from robustlens.analysis._bootstrap import BootstrapEstimate, check_confidence, percentile_interval
from robustlens.errors import RobustlensError

__all__ = [
    "RDM",
    "ClassRDM",
    "CompareMethod",
    "RDMMetric",
    "bootstrap_compare_rdms",
    "compare_rdm_sets",
    "compare_rdms",
    "rdm",
]

RDMMetric = Literal["correlation", "euclidean", "cosine"]
CompareMethod = Literal["spearman", "pearson", "kendall_tau_a", "cosine"]
_METRICS = ("correlation", "euclidean", "cosine")
_METHODS = ("spearman", "pearson", "kendall_tau_a", "cosine")


@dataclass(frozen=True)
class RDM:
    """A representational dissimilarity matrix with its measure and descriptors.

    Attributes:
        matrix: (n, n) float64, symmetric, zero diagonal; NaN where undefined (a constant
            pattern under the correlation measure).
        measure: the dissimilarity measure (``"correlation"``, ``"euclidean"``, ``"cosine"``).
        descriptors: about the whole RDM (``layer``, ``model``, ``attack``, ``eps``, ...).
        stimulus_descriptors: per stimulus, each of length n (``label``, ``index``, ...).
    """

    matrix: np.ndarray
    measure: str
    descriptors: dict[str, Any] = field(default_factory=dict)
    stimulus_descriptors: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise RobustlensError(f"an RDM must be square (n, n); received shape {m.shape}.")
        object.__setattr__(self, "matrix", m)
        fixed = {}
        for key, value in self.stimulus_descriptors.items():
            arr = np.asarray(value)
            if arr.shape[:1] != (m.shape[0],):
                raise RobustlensError(f"stimulus descriptor {key!r} has {arr.shape[:1]} entries; "
                                      f"the RDM has {m.shape[0]} stimuli.")
            fixed[key] = arr
        object.__setattr__(self, "stimulus_descriptors", fixed)

    @property
    def n_stimuli(self) -> int:
        return int(self.matrix.shape[0])

    def vector(self) -> np.ndarray:
        """The upper triangle (above the diagonal), row by row: (n * (n - 1) / 2,)."""
        return self.matrix[np.triu_indices(self.n_stimuli, k=1)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> RDM:
        """The RDM of the stimuli at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return RDM(self.matrix[np.ix_(idx, idx)], self.measure, dict(self.descriptors),
                   {k: v[idx] for k, v in self.stimulus_descriptors.items()})

    def to_frame(self) -> pd.DataFrame:
        """Tidy upper triangle: ``stimulus_i, stimulus_j, dissimilarity`` plus the RDM's
        descriptors as constant columns and stimulus descriptors suffixed ``_i`` / ``_j``."""
        i, j = np.triu_indices(self.n_stimuli, k=1)
        df = pd.DataFrame({"stimulus_i": i, "stimulus_j": j, "dissimilarity": self.matrix[i, j]})
        for key, value in self.stimulus_descriptors.items():
            if value.ndim == 1:
                df[f"{key}_i"], df[f"{key}_j"] = value[i], value[j]
        for key, value in reversed(list(self.descriptors.items())):
            df.insert(0, key, value)
        df["measure"] = self.measure
        return df


def _patterns(acts: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(acts)) if not isinstance(acts, torch.Tensor) else acts.detach()
    if x.ndim < 2:
        raise RobustlensError(f"activations must be (n_stimuli, n_features) or (n_stimuli, ...); "
                              f"received shape {tuple(x.shape)}.")
    x = x.reshape(x.shape[0], -1)
    if not x.is_floating_point():
        x = x.double()
    return x


def rdm(acts: torch.Tensor | np.ndarray, metric: RDMMetric = "correlation", *,
        descriptors: Mapping[str, Any] | None = None,
        stimulus_descriptors: Mapping[str, Any] | None = None) -> RDM:
    """The RDM of n stimuli's activation patterns.

    One matrix product (the n x n Gram matrix) in the activations' own floating dtype and
    device, so a float32 GPU tensor is fast; the result is float64 on the host. With
    float32 input, dissimilarities are accurate to about 1e-6 (correlation, cosine) or
    1e-6 relative (Euclidean, computed after centering the features).

    Args:
        acts: (n_stimuli, n_features) or (n_stimuli, ...) (flattened per stimulus).
        metric: ``"correlation"``, ``"euclidean"`` or ``"cosine"``.
        descriptors: attached to the :class:`RDM`.
        stimulus_descriptors: attached to the :class:`RDM`, each of length n_stimuli.

    Returns:
        An :class:`RDM`.
    """
    if metric not in _METRICS:
        raise RobustlensError(f"metric must be one of {', '.join(_METRICS)}; received {metric!r}.")
    x = _patterns(acts)
    if metric == "correlation":
        x = x - x.mean(dim=1, keepdim=True)
    elif metric == "euclidean":
        x = x - x.mean(dim=0, keepdim=True)  # distances are unchanged; the Gram is better posed
    gram = x @ x.T
    sq = gram.diagonal().clone()
    if metric == "euclidean":
        d = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min_(0.0).sqrt_()
    else:
        norm = sq.clamp_min(0.0).sqrt()
        d = 1.0 - gram / (norm[:, None] * norm[None, :])
        d = d.clamp_(0.0, 2.0)
        undefined = norm == 0
        d[undefined, :] = math.nan
        d[:, undefined] = math.nan
    m = d.double().cpu().numpy()
    m = (m + m.T) / 2.0
    np.fill_diagonal(m, 0.0)
    return RDM(m, metric, dict(descriptors or {}),
               {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v)
                for k, v in (stimulus_descriptors or {}).items()})


def _tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a from scipy's O(m log m) tau-b and the tie counts."""
    n0 = len(x) * (len(x) - 1) / 2.0
    if n0 == 0:
        return math.nan

    def tied_pairs(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float((counts * (counts - 1) / 2.0).sum())

    n1, n2 = tied_pairs(x), tied_pairs(y)
    if n1 == n0 or n2 == n0:  # one vector constant: no pair is concordant or discordant
        return 0.0
    tau_b = scipy.stats.kendalltau(x, y, variant="b").statistic
    return float(tau_b * math.sqrt((n0 - n1) * (n0 - n2)) / n0)


def _compare_vectors(x: np.ndarray, y: np.ndarray, method: str) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return math.nan
    if method == "kendall_tau_a":
        return _tau_a(x, y)
    if method == "spearman":
        x, y = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
    if method != "cosine":
        x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(np.clip((x @ y) / denom, -1.0, 1.0)) if denom > 0 else math.nan


def _check_pair(a: RDM, b: RDM, method: str) -> None:
    if method not in _METHODS:
        raise RobustlensError(f"method must be one of {', '.join(_METHODS)}; received {method!r}.")
    if a.n_stimuli != b.n_stimuli:
        raise RobustlensError(f"the RDMs cover different numbers of stimuli: {a.n_stimuli} vs "
                              f"{b.n_stimuli}; compare RDMs of the same stimuli.")


def compare_rdms(a: RDM, b: RDM, method: CompareMethod = "spearman") -> float:
    """Similarity of two RDMs of the same stimuli, from their upper triangles.

    Entries undefined (NaN) in either RDM are left out. Returns NaN when fewer than two
    entries remain or a correlation is undefined (a constant RDM).
    """
    _check_pair(a, b, method)
    return _compare_vectors(a.vector(), b.vector(), method)


def compare_rdm_sets(rows: Mapping[str, RDM], columns: Mapping[str, RDM],
                     method: CompareMethod = "spearman") -> pd.DataFrame:
    """Every RDM of ``rows`` compared with every RDM of ``columns`` (e.g. layer x layer of
    two models, or clean vs adversarial per layer).

    Returns:
        Tidy rows ``row, row_index, column, column_index, similarity``.
    """
    out = []
    for i, (rname, ra) in enumerate(rows.items()):
        for j, (cname, cb) in enumerate(columns.items()):
            out.append({"row": rname, "row_index": i, "column": cname, "column_index": j,
                        "similarity": compare_rdms(ra, cb, method)})
    return pd.DataFrame(out, columns=["row", "row_index", "column", "column_index", "similarity"])


def bootstrap_compare_rdms(a: RDM, b: RDM, method: CompareMethod = "spearman", *,
                           n_bootstrap: int = 1000, confidence: float = 0.95,
                           seed: int = 0) -> BootstrapEstimate:
    """:func:`compare_rdms` with a percentile bootstrap confidence interval over stimuli.

    Each resample draws n stimuli with replacement and compares the two RDMs on the pairs
    of draws that are different stimuli (pairs of a stimulus with its own copy, whose
    dissimilarity is 0 by construction, are left out), as in rsatoolbox. For symmetric
    RDMs and every method but Kendall's tau-a, a resample is computed as the upper triangle
    with each entry (u, v) weighted by how often u and v were drawn (the same statistic,
    equal to rounding; O(n^2) per resample without a sort: 1000 resamples of a
    1000-stimulus RDM in seconds); Kendall's tau-a writes each resample's pairs out.

    Args:
        a: an RDM.
        b: an RDM of the same stimuli.
        method: as in :func:`compare_rdms`.
        n_bootstrap: resamples.
        confidence: level of the interval.
        seed: seed of the resampling (a private ``numpy`` generator).
    """
    _check_pair(a, b, method)
    check_confidence(confidence, n_bootstrap)
    rng = np.random.default_rng(seed)
    n = a.n_stimuli
    draws = (rng.integers(0, n, size=n) for _ in range(n_bootstrap))
    if method != "kendall_tau_a" and _symmetric(a.matrix) and _symmetric(b.matrix):
        samples = _weighted_bootstrap(a.vector(), b.vector(), n, draws, method)
    else:
        samples = _resampled_bootstrap(a.matrix, b.matrix, n, draws, method)
    return percentile_interval(compare_rdms(a, b, method), samples, confidence)


def _symmetric(m: np.ndarray) -> bool:
    return bool(np.array_equal(m, m.T, equal_nan=True))


def _resampled_bootstrap(ma: np.ndarray, mb: np.ndarray, n: int, draws: Iterator[np.ndarray],
                         method: str) -> np.ndarray:
    """Each resample's pairs written out and compared (the definition; O(n^2 log n) each)."""
    i, j = np.triu_indices(n, k=1)
    out = []
    for draw in draws:
        si, sj = draw[i], draw[j]
        keep = si != sj
        out.append(_compare_vectors(ma[si[keep], sj[keep]], mb[si[keep], sj[keep]], method))
    return np.asarray(out, dtype=np.float64)


def _weighted_bootstrap(va: np.ndarray, vb: np.ndarray, n: int, draws: Iterator[np.ndarray],
                        method: str) -> np.ndarray:
    """The same statistic as :func:`_resampled_bootstrap`, without writing the pairs out.

    For a symmetric RDM, a resample in which stimulus u is drawn c_u times holds the entry
    (u, v) of the upper triangle exactly c_u * c_v times (and nothing of the diagonal). So
    each resample is the upper triangle with integer weights w = c_u * c_v: Pearson and
    cosine become weighted sums, and Spearman's mid-ranks come from the weights summed per
    group of tied values (ranked once, outside the loop): O(n^2) per resample, no sort.
    """
    i, j = np.triu_indices(n, k=1)
    ok = np.isfinite(va) & np.isfinite(vb)
    i, j, va, vb = i[ok], j[ok], va[ok], vb[ok]
    if method == "spearman":
        return _weighted_spearman(va, vb, i, j, n, draws)
    if method == "pearson" and len(va):  # shifted by the full sample's means: fewer digits lost
        va, vb = va - va.mean(), vb - vb.mean()
    out = []
    for _c, w, total in _draw_weights(draws, i, j, n):
        if total < 2:
            out.append(math.nan)
            continue
        x, y = va, vb
        if method != "cosine":
            x = x - float(w @ x) / total
            y = y - float(w @ y) / total
        wx = w * x
        denom = math.sqrt(float(wx @ x) * float((w * y) @ y))
        out.append(float(np.clip((wx @ y) / denom, -1.0, 1.0)) if denom > 0 else math.nan)
    return np.asarray(out, dtype=np.float64)


def _draw_weights(draws: Iterator[np.ndarray], i: np.ndarray, j: np.ndarray, n: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """Per resample of the classes: how often each class was drawn (``c``), the weight of each
    RDM entry (i, j) (``c[i] * c[j]``, the times the pair appears) and the weights' total."""
    for draw in draws:
        c = np.bincount(draw, minlength=n).astype(np.float64)
        w = c[i] * c[j]
        yield c, w, float(w.sum())


def _weighted_spearman(va: np.ndarray, vb: np.ndarray, i: np.ndarray, j: np.ndarray, n: int,
                       draws: Iterator[np.ndarray]) -> np.ndarray:
    """Spearman r of each resample, the entries weighted (see :func:`_weighted_bootstrap`).

    The entries are put in the order of ``va`` once, so ``va``'s groups of ties are runs:
    their weights are summed by runs and their mid-ranks repeated by runs. The mid-ranks of
    N weighted values average (N + 1) / 2 and their sum of squares about it is
    ((N^3 - N) - sum over tie groups of (W^3 - W)) / 12, a group of W equal values; without
    ties in the RDM (and nothing undefined), the groups are the entries, whose sum of w^3
    is ((sum c^3)^2 - sum c^6) / 2 from the draw counts alone.
    """
    order = np.argsort(va, kind="stable")
    va, vb, i, j = va[order], vb[order], i[order], j[order]
    starts = np.flatnonzero(np.r_[True, va[1:] != va[:-1]]) if len(va) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(va)])
    ties_a = len(starts) < len(va)
    _, groups_b = np.unique(vb, return_inverse=True)
    n_b = int(groups_b.max(initial=-1)) + 1
    ties_b = n_b < len(vb)
    every_pair = len(va) == n * (n - 1) // 2  # nothing undefined was left out
    out = []
    for c, w, total in _draw_weights(draws, i, j, n):
        if total < 2:
            out.append(math.nan)
            continue
        mid = (total + 1.0) / 2.0
        if every_pair:
            c3 = c ** 3
            cubes = (float(c3.sum()) ** 2 - float((c3 * c3).sum())) / 2.0
        elif not (ties_a and ties_b):
            cubes = float((w * w) @ w)
        w_a = np.add.reduceat(w, starts) if ties_a else w
        rank_a = np.cumsum(w_a) - (w_a - 1.0) / 2.0 - mid  # centred mid-ranks, per group
        w_b = np.bincount(groups_b, weights=w, minlength=n_b)
        rank_b = np.cumsum(w_b) - (w_b - 1.0) / 2.0 - mid
        ss_a = (total ** 3 - (float((w_a * w_a) @ w_a) if ties_a else cubes)) / 12.0
        ss_b = (total ** 3 - (float((w_b * w_b) @ w_b) if ties_b else cubes)) / 12.0
        per_a = np.repeat(rank_a, sizes) if ties_a else rank_a
        cross = float((w * per_a) @ rank_b[groups_b])
        denom = math.sqrt(ss_a * ss_b)
        out.append(float(np.clip(cross / denom, -1.0, 1.0)) if denom > 0 else math.nan)
    return np.asarray(out, dtype=np.float64)


class ClassRDM:
    """Streaming class-averaged RDMs: per-class sums of each layer's activations.

    Keeps, per layer and per class seen, the number of images and the float64 sum of their
    (flattened) activations, on the activations' device: ``classes seen x n_features``
    values per layer, independent of the number of images; nothing for classes never seen
    (a 100-class selection of a 1000-class dataset costs 100 sums). The RDM is computed over
    the class means of the classes seen.

    Args:
        n_classes: number of classes (labels are 0 .. n_classes - 1).
        metric: the RDMs' dissimilarity measure.
        class_names: optional names, one per class (a stimulus descriptor of the RDMs).
    """

    def __init__(self, n_classes: int, metric: RDMMetric = "correlation",
                 class_names: Sequence[str] | None = None) -> None:
        if metric not in _METRICS:
            raise RobustlensError(f"metric must be one of {', '.join(_METRICS)}; "
                                  f"received {metric!r}.")
        if class_names is not None and len(class_names) != n_classes:
            raise RobustlensError(f"{len(class_names)} class names for {n_classes} classes.")
        self.n_classes, self.metric = int(n_classes), metric
        self.class_names = None if class_names is None else tuple(class_names)
        self._order: list[str] = []
        self._features: dict[str, int] = {}
        self._counts: dict[str, dict[int, int]] = {}
        self._sums: dict[str, dict[int, torch.Tensor]] = {}  # class -> (D,) float64

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
            lab = labels.to(x.device).long()
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.n_classes):
                raise RobustlensError(f"labels must lie in [0, {self.n_classes}); received "
                                      f"[{int(lab.min())}, {int(lab.max())}].")
            classes, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
            sums = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, device=x.device)
            sums.index_add_(0, inverse, x.double())  # only the classes in this batch
            self._add(layer, classes.tolist(), counts.tolist(), sums)

    def _add(self, layer: str, classes: list[int], counts: list[int], sums: torch.Tensor) -> None:
        d = sums.shape[1]
        if layer not in self._sums:
            self._order.append(layer)
            self._features[layer], self._counts[layer], self._sums[layer] = d, {}, {}
        elif self._features[layer] != d:
            raise RobustlensError(f"layer {layer!r} has {self._features[layer]} features here "
                                  f"and {d} there.")
        layer_counts, layer_sums = self._counts[layer], self._sums[layer]
        for row, (c, n) in enumerate(zip(classes, counts, strict=True)):
            c = int(c)
            if c in layer_sums:
                layer_sums[c] += sums[row].to(layer_sums[c].device)
                layer_counts[c] += int(n)
            else:
                layer_sums[c] = sums[row].clone()
                layer_counts[c] = int(n)

    def merge(self, other: ClassRDM) -> ClassRDM:
        """Add ``other``'s sums into this reducer (in place) and return it.

        Args:
            other: a reducer over the same classes.
        """
        for layer in other._order:
            classes = sorted(other._sums[layer])
            if not classes:
                continue
            sums = torch.stack([other._sums[layer][c] for c in classes])
            self._add(layer, classes, [other._counts[layer][c] for c in classes], sums)
        return self

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-class sums."""
        return sum(t.nbytes for sums in self._sums.values() for t in sums.values())

    @property
    def layers(self) -> list[str]:
        return list(self._order)

    def class_means(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(classes seen, their (k, n_features) float64 mean activations) at ``layer``."""
        if layer not in self._sums:
            raise RobustlensError(f"layer {layer!r} has not been seen; seen: {self._order[:10]}")
        seen = sorted(c for c, n in self._counts[layer].items() if n > 0)
        if not seen:
            return (torch.zeros(0, dtype=torch.int64),
                    torch.zeros(0, self._features[layer], dtype=torch.float64))
        means = torch.stack([self._sums[layer][c].cpu() / self._counts[layer][c] for c in seen])
        return torch.tensor(seen, dtype=torch.int64), means

    def rdm(self, layer: str) -> RDM:
        """The RDM of the class means at ``layer`` (classes never seen are left out)."""
        seen, means = self.class_means(layer)
        stim: dict[str, Any] = {"class": seen.numpy()}
        if self.class_names is not None:
            stim["class_name"] = np.asarray([self.class_names[c] for c in seen.tolist()])
        return rdm(means, self.metric, descriptors={"layer": layer}, stimulus_descriptors=stim)

    def rdms(self) -> dict[str, RDM]:
        """Layer name -> :meth:`rdm`, in the order the layers were first seen."""
        return {layer: self.rdm(layer) for layer in self._order}

    def result(self) -> pd.DataFrame:
        """Tidy RDM entries: ``layer, layer_index, class_i, class_j, dissimilarity, measure``."""
        frames = []
        for i, layer in enumerate(self._order):
            r = self.rdm(layer)
            tri_i, tri_j = np.triu_indices(r.n_stimuli, k=1)
            cls = r.stimulus_descriptors["class"]
            frames.append(pd.DataFrame({"layer": layer, "layer_index": i, "class_i": cls[tri_i],
                                        "class_j": cls[tri_j],
                                        "dissimilarity": r.matrix[tri_i, tri_j],
                                        "measure": self.metric}))
        cols = ["layer", "layer_index", "class_i", "class_j", "dissimilarity", "measure"]
        return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Per layer: ``classes`` (k,) int64 seen, ``counts`` (k,) and ``sums`` (k, D) float64."""
        state: dict[str, torch.Tensor] = {}
        for layer in self._order:
            classes = sorted(self._sums[layer])
            d = self._features[layer]
            state[f"{layer}|classes"] = torch.tensor(classes, dtype=torch.int64)
            state[f"{layer}|counts"] = torch.tensor([float(self._counts[layer][c]) for c in classes],
                                                    dtype=torch.float64)
            state[f"{layer}|sums"] = (torch.stack([self._sums[layer][c].cpu() for c in classes])
                                      if classes else torch.zeros(0, d, dtype=torch.float64))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the sums with a :meth:`state_dict`'s (also reads the older dense layout: per
        layer ``counts`` (K,) and ``sums`` (K, D) over every class, without ``classes``).

        Args:
            state: a :meth:`state_dict`.
        """
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            layer, _, part = key.rpartition("|")
            parts.setdefault(layer, {})[part] = value
        self._order, self._features, self._counts, self._sums = [], {}, {}, {}
        for layer, p in parts.items():
            counts, sums = p["counts"], p["sums"].double()
            if "classes" in p:
                classes = p["classes"].tolist()
            else:  # dense layout: row c is class c
                classes = torch.nonzero(counts > 0).flatten().tolist()
                counts, sums = counts[classes], sums[classes]
            self._order.append(layer)
            self._features[layer] = sums.shape[1]
            self._counts[layer] = {int(c): int(n) for c, n in zip(classes, counts.tolist(), strict=True)}
            self._sums[layer] = {int(c): sums[i].clone() for i, c in enumerate(classes)}
