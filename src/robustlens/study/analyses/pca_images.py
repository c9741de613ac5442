"""Activations as images (study S1), wrapping :mod:`robustlens.analysis.pca_images`::

    [analyses.pca_images]             # a PCA over channels fit on clean, applied to adversarial
    layers = "all"                    # maps (B, C, H, W) with C >= n_components only
    n_images = 1
    n_components = 3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis import plots
from robustlens.analysis.pca_images import ActivationPCA
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    Condition,
    StudyAnalysis,
    condition_key,
    condition_str,
    count,
    layer_selector,
    option,
    register_analysis,
)
from robustlens.study.analyses.helpers import LayerOption, concat_frames

__all__ = ["PCAImagesAnalysis", "PCAImagesOptions"]

_MAX_FIGURE_LAYERS = 6


@dataclass(frozen=True)
class PCAImagesOptions(AnalysisOptions):
    """Options of ``[analyses.pca_images]``.

    Attributes:
        layers: the layers shown (``"all"`` or selectors).
        n_images: how many of the study's first images are kept.
        n_components: principal components per layer (the image's channels).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    n_images: int = option(1, count(1))
    n_components: int = option(3, count(1))


def _image_rows(images: torch.Tensor, attack: str, eps: float, layer: str,
                layer_index: int) -> pd.DataFrame:
    """(B, K, H, W) images in [0, 1] -> tidy pixel rows."""
    b, k, h, w = images.shape
    grid = np.indices((b, k, h, w)).reshape(4, -1)
    return pd.DataFrame({"attack": attack, "eps": eps, "layer": layer, "layer_index": layer_index,
                         "image": grid[0], "component": grid[1], "y": grid[2], "x": grid[3],
                         "value": images.reshape(-1).numpy().astype(np.float32)})


def _images_from_rows(rows: pd.DataFrame, image: int) -> torch.Tensor:
    g = rows[rows["image"] == image]
    k, h, w = (int(g[c].max()) + 1 for c in ("component", "y", "x"))
    out = np.zeros((k, h, w), dtype=np.float32)
    out[g["component"], g["y"], g["x"]] = g["value"]
    return torch.from_numpy(out)


@register_analysis
class PCAImagesAnalysis(LayerOption, StudyAnalysis):
    """Activations of the first images as pictures: a PCA over channels fit on the clean
    activations, applied to the adversarial ones (S1)."""

    name = "pca_images"
    title = "Activations as images: PCA over channels, clean vs adversarial (S1)"
    report_text = (
        "Activations as images (S1): at each layer a PCA over the channels is fit on clean "
        "activations and applied to the adversarial ones, and the first three components are "
        "shown as the red, green and blue of an image, clean beside adversarial, one row per "
        "layer. Where the two images agree the layer still sees the same thing; colours that "
        "change show the layer encoding something else for the perturbed image.")
    Options = PCAImagesOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name)
        self._n = self.options.n_images
        self._k = self.options.n_components
        self._clean: dict[str, torch.Tensor] = {}
        self._adv: dict[Condition, dict[str, torch.Tensor]] = {}
        self._capturing = False

    def _keep(self, images: torch.Tensor, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kept = {"input": images[: self._n].detach().float().clamp(0, 1).cpu()}
        for name, a in self._select(acts).items():
            if a.ndim >= 4 and a.shape[1] >= self._k:
                kept[name] = a[: self._n].detach().cpu().clone()
        return kept

    def update_clean(self, batch: CleanBatch) -> None:
        self._capturing = batch.index == 0  # only the study's first batch is kept
        if self._capturing:
            self._clean = self._keep(batch.images, dict(batch.activations))

    def update(self, batch: AnalysisBatch) -> None:
        key = (batch.attack, batch.eps)
        if self._capturing and key not in self._adv:
            self._adv[key] = self._keep(batch.images, dict(batch.activations))

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._clean:
            return {}
        frames, variance = [], []
        conditions: list[tuple[Condition, dict[str, torch.Tensor]]] = [(("clean", 0.0), self._clean)]
        conditions += list(self._adv.items())
        for index, (layer, clean) in enumerate(self._clean.items()):
            if layer == "input":
                for (attack, eps), acts in conditions:
                    frames.append(_image_rows(acts[layer], attack, eps, layer, -1))
                continue
            pca = ActivationPCA(self._k).fit(clean)
            for c, ratio in enumerate(pca.explained_variance_ratio_.tolist()):
                variance.append({"layer": layer, "layer_index": index, "component": c,
                                 "explained_variance_ratio": ratio})
            for (attack, eps), acts in conditions:
                if layer in acts:
                    images = pca.to_images(pca.transform(acts[layer]))
                    frames.append(_image_rows(images, attack, eps, layer, index))
        return {"pca_images": concat_frames(frames), "pca_variance": pd.DataFrame(variance)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("pca_images")
        if df is None or df.empty:
            return []
        out = []
        for model, g in df.groupby("model", sort=False):
            clean = g[g["attack"] == "clean"]
            order = clean.drop_duplicates("layer").sort_values("layer_index")["layer"].tolist()
            maps = [name for name in order if name != "input"]
            n_show = min(len(maps), _MAX_FIGURE_LAYERS)
            pick = sorted({round(i * (len(maps) - 1) / max(n_show - 1, 1)) for i in range(n_show)})
            shown = [name for name in order if name == "input"] + [maps[i] for i in pick]
            for attack in [a for a in g["attack"].unique() if a != "clean"]:
                eps = g.loc[g["attack"] == attack, "eps"].max()
                adv = g[(g["attack"] == attack) & (g["eps"] == eps)]
                rows_c = [_images_from_rows(clean[clean["layer"] == name], 0) for name in shown]
                rows_a = [_images_from_rows(adv[adv["layer"] == name], 0) for name in shown]
                out.append((f"{model}: PCA images, clean vs {attack} eps={eps:g}",
                            plots.plot_pca_images(rows_c, rows_a, row_labels=shown,
                                                  title=f"{model}, {attack} eps={eps:g}")))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"clean": dict(self._clean),
                "adversarial": {condition_str(k): dict(v) for k, v in self._adv.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clean = dict(state["clean"])
        self._adv = {condition_key(k): dict(v) for k, v in state["adversarial"].items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, PCAImagesAnalysis)
        if not self._clean and other._clean:  # the first batch was the other worker's
            self._clean, self._adv = dict(other._clean), dict(other._adv)
