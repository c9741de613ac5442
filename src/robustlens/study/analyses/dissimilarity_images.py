"""S1's single-image curves and flagged layers, wrapping
:class:`robustlens.analysis.dissimilarity.ImageDissimilarity`::

    [analyses.dissimilarity_images]
    layers = "all"          # names, globs ("layer*.relu"), "type:ReLU", or a list
    n_images = 8            # the first images (by data position) kept, per attack x eps
    image = 0               # the image drawn in the single-image figure

Tables: ``dissimilarity_images`` (one row per kept image x layer x attack x eps: ``image,
layer, layer_index, dissimilarity, flag, reason``) and ``dissimilarity_flags`` (per layer: the
mean over every image, its spread, the counts of undefined and exactly-zero values, and the
layer's ``flag`` and ``reason``). Figures put every model on one axis over relative depth
(the source's main figure), for the mean and for one image, with undefined (x) and zero (o)
layers marked and explained. Conditions with eps = 0 are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis.depth_plots import plot_dissimilarity_over_depth, plot_image_dissimilarity
from robustlens.analysis.dissimilarity import ImageDissimilarity, LayerDissimilarity, flag_layers
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    count,
    layer_selector,
    option,
    register_analysis,
)
from robustlens.study.analyses.helpers import (
    LayerOption,
    PerCondition,
    concat_frames,
    with_condition,
)

__all__ = ["ImageDissimilarityAnalysis", "ImageDissimilarityOptions"]


@dataclass(frozen=True)
class ImageDissimilarityOptions(AnalysisOptions):
    """Options of ``[analyses.dissimilarity_images]``.

    Attributes:
        layers: the layers compared (``"all"`` or selectors).
        n_images: images kept per attack x eps (the first by data position).
        image: the image of the single-image figure (a data position below ``n_images``).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    n_images: int = option(8, count(1))
    image: int = option(0, count(0))


@register_analysis
class ImageDissimilarityAnalysis(LayerOption, PerCondition):
    """Per-image 1 - Pearson r per layer, with undefined and zero layers flagged (S1)."""

    name = "dissimilarity_images"
    title = "Dissimilarity per image and layer, models on one axis, flagged layers (S1)"
    report_text = (
        "The source's single-image curve: 1 - Pearson r between clean and adversarial activations for "
        'each kept image, one point per layer over relative depth (0: input, 1: logits), every model '
        'of the study on one axis so a standard and a brain-inspired model can be compared directly. '
        'Layers where 1 - r is undefined (a constant activation, e.g. a ReLU map that is all zero) or '
        'exactly 0 (the layer did not change, or changed only by a scale and shift) are marked and '
        'listed with the reason in the flags table: such points are not a dip in dissimilarity but a '
        'property of the layer.')
    Options = ImageDissimilarityOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name)
        if self.options.image >= self.options.n_images:
            from robustlens.errors import ConfigError

            raise ConfigError(f"[analyses.{self.name}].image must be below n_images ({self.options.n_images}); "
                              f"received {self.options.image}.")

    def new_reducers(self) -> dict[str, Any]:
        return {"images": ImageDissimilarity(self.options.n_images), "layers": LayerDissimilarity()}

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps == 0:
            return
        clean, adv = self._select(batch.clean.activations), self._select(batch.activations)
        reducers = self.reducers_for(batch)
        reducers["images"].update(clean, adv, offset=batch.clean.offset)
        reducers["layers"].update(clean, adv)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self.reducers:
            return {}
        images = concat_frames([with_condition(r["images"].result(), k) for k, r in self.reducers.items()])
        flags = concat_frames([with_condition(flag_layers(r["layers"].result()), k)
                               for k, r in self.reducers.items()])
        return {"dissimilarity_images": images.assign(selected=images["image"] == self.options.image),
                "dissimilarity_flags": flags}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        out = []
        flags, images = tables.get("dissimilarity_flags"), tables.get("dissimilarity_images")
        if flags is not None and not flags.empty:
            for (attack, eps), g in flags.groupby(["attack", "eps"], sort=False):
                title = f"Mean dissimilarity over depth, models on one axis: {attack} eps={eps:g}"
                out.append((title, plot_dissimilarity_over_depth(g, title=title)))
        if images is not None and not images.empty:
            chosen = images[images["selected"]] if "selected" in images.columns else images
            for (attack, eps), g in chosen.groupby(["attack", "eps"], sort=False):
                if g.empty:
                    continue
                image = int(g["image"].iloc[0])
                title = f"One image (#{image}) over depth: {attack} eps={eps:g}"
                out.append((title, plot_image_dissimilarity(g, image, title=title)))
        return out
