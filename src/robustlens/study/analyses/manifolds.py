"""Class activation manifolds vs per-class robustness (study S3), wrapping
:mod:`robustlens.analysis.manifolds`::

    [analyses.manifolds]              # per-class PCA dimension vs per-class accuracy
    layer = "penultimate"             # a layer name, or "penultimate"
    threshold = 0.95                  # explained variance defining the dimension
    n_bootstrap = 1000
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.activations.layers import penultimate_layer
from robustlens.analysis import plots
from robustlens.analysis.correlation import correlate_tables
from robustlens.analysis.manifolds import ClassManifolds
from robustlens.errors import ConfigError, RobustlensError
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    Condition,
    StudyAnalysis,
    condition_key,
    condition_str,
    count,
    number,
    option,
    register_analysis,
)
from robustlens.study.analyses.helpers import LayerSelect, concat_frames

__all__ = ["ManifoldAnalysis", "ManifoldOptions"]


def _layer_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a layer name or \"penultimate\"; received {value!r}.")
    return value


@dataclass(frozen=True)
class ManifoldOptions(AnalysisOptions):
    """Options of ``[analyses.manifolds]``.

    Attributes:
        layer: the layer whose class manifolds are measured (a name, or ``"penultimate"``).
        threshold: the fraction of variance in (0, 1) the PCA dimension explains.
        n_bootstrap: bootstrap resamples of the dimension-accuracy correlation (>= 1).
    """

    layer: str = option("penultimate", _layer_name)
    threshold: float = option(0.95, number(0, 1, open_low=True, open_high=True))
    n_bootstrap: int = option(1000, count(1))


@register_analysis
class ManifoldAnalysis(StudyAnalysis):
    """S3: per-class PCA dimension of clean activations vs per-class robust accuracy."""

    name = "manifolds"
    title = "Class activation manifolds and per-class robustness (S3)"
    report_text = (
        "Class activation manifolds (S3): the number of principal components each class's clean "
        "activations need to reach the variance threshold at the chosen layer (its dimension), "
        "against that class's robust accuracy. The first figure compares the dimensions per "
        "class and model; each scatter is one attack x eps, one point per class, with the "
        "Pearson and Spearman correlations. A negative correlation means higher-dimensional "
        "classes are less robust. With m images a class spans at most m - 1 dimensions: read "
        "dimensions near that bound as saturated.")
    Options = ManifoldOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        layer = self.options.layer
        self._layer = penultimate_layer(model) if layer == "penultimate" else layer
        self._select = LayerSelect(model, [self._layer], f"[analyses.{self.name}].layer")
        self._n_bootstrap = self.options.n_bootstrap
        self._manifolds = ClassManifolds(len(class_names), self.options.threshold, class_names)
        self._counts: dict[Condition, torch.Tensor] = {}  # (2, K): correct, total

    def layers(self) -> list[str] | None:
        return [self._layer]

    def _count_correct(self, key: Condition, logits: torch.Tensor, labels: torch.Tensor) -> None:
        k = len(self.class_names)
        correct = (logits.argmax(1) == labels).double()
        row = torch.stack([torch.bincount(labels, weights=correct, minlength=k),
                           torch.bincount(labels, minlength=k).double()]).cpu()
        self._counts[key] = self._counts.get(key, torch.zeros_like(row)) + row

    def update_clean(self, batch: CleanBatch) -> None:
        acts = self._select(batch.activations)
        if len(acts) != 1:
            raise RobustlensError(f"manifolds: expected one recorded activation for "
                                  f"{self._layer!r}; found {sorted(acts)}.")
        self._manifolds.update(acts, batch.labels)
        self._count_correct(("clean", 0.0), batch.logits, batch.labels)

    def update(self, batch: AnalysisBatch) -> None:
        self._count_correct((batch.attack, batch.eps), batch.logits, batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        manifolds = self._manifolds.result()
        if manifolds.empty:
            return {}
        rows = []
        for (attack, eps), (correct, total) in self._counts.items():
            for c in range(len(self.class_names)):
                if total[c] > 0:
                    rows.append({"attack": attack, "eps": eps, "class": c,
                                 "n_images": int(total[c]),
                                 "accuracy": float(correct[c] / total[c])})
        acc = pd.DataFrame(rows).merge(
            manifolds[["class", "class_name", "layer", "dimension", "participation_ratio"]],
            on="class")
        corr = []
        for measure in ("dimension", "participation_ratio"):
            df = correlate_tables(manifolds, acc.drop(columns=["layer", measure]), measure,
                                  "accuracy", by=["layer", "attack", "eps"],
                                  n_bootstrap=self._n_bootstrap)
            corr.append(df.assign(measure=measure))
        return {"manifolds": manifolds, "manifold_accuracy": acc,
                "manifold_correlation": concat_frames(corr)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        manifolds, acc = tables.get("manifolds"), tables.get("manifold_accuracy")
        if manifolds is None or acc is None or manifolds.empty:
            return []
        out = [("Class manifold dimension per model", plots.plot_manifold_dimensions(manifolds))]
        corr = tables.get("manifold_correlation", pd.DataFrame())
        for attack in [a for a in acc["attack"].unique() if a != "clean"]:
            rows = acc[acc["attack"] == attack]
            # the eps where the mean accuracy is closest to 50%: the most informative spread
            mean = rows.groupby("eps")["accuracy"].mean()
            eps = float((mean - 0.5).abs().idxmin())
            sel = rows[rows["eps"] == eps]
            c = corr[(corr["attack"] == attack) & (corr["eps"] == eps)
                     & (corr["measure"] == "dimension")] if len(corr) else None
            out.append((f"Manifold dimension vs per-class accuracy, {attack} eps={eps:g}",
                        plots.plot_manifold_accuracy(sel, correlations=c,
                                                     title=f"{attack}, eps={eps:g}")))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"manifolds": self._manifolds.state_dict(),
                "counts": {condition_str(k): v.clone() for k, v in self._counts.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._manifolds.load_state_dict(state["manifolds"])
        self._counts = {condition_key(k): v.clone() for k, v in state["counts"].items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, ManifoldAnalysis)
        self._manifolds.merge(other._manifolds)
        for key, counts in other._counts.items():
            self._counts[key] = self._counts[key] + counts if key in self._counts else counts.clone()
