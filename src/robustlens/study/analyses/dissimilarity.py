"""Dissimilarity between clean and adversarial activations (study S1), wrapping
:mod:`robustlens.analysis.dissimilarity`::

    [analyses.dissimilarity]            # 1 - Pearson r per layer
    layers = "all"                      # names, globs ("layer*.relu"), "type:ReLU", or a list

    [analyses.dissimilarity_channels]   # 1 - r by metric, per layer and per channel
    layers = "all"
    metric = "spearman"                 # or "pearson", "cosine"

Conditions with eps = 0 are skipped (clean and adversarial activations are identical).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis import plots
from robustlens.analysis.dissimilarity import ChannelDissimilarity, LayerDissimilarity
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    choice,
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

__all__ = ["ChannelDissimilarityAnalysis", "ChannelDissimilarityOptions", "DissimilarityAnalysis",
           "DissimilarityOptions"]


@dataclass(frozen=True)
class DissimilarityOptions(AnalysisOptions):
    """Options of ``[analyses.dissimilarity]``.

    Attributes:
        layers: the layers compared (``"all"`` or selectors).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())


@register_analysis
class DissimilarityAnalysis(LayerOption, PerCondition):
    """Per-layer 1 - Pearson r between clean and adversarial activations (study S1)."""

    name = "dissimilarity"
    title = "Per-layer dissimilarity between clean and adversarial activations"
    report_text = (
        "How far the perturbation moves each layer's activations: 1 - Pearson r between a clean "
        "image's activation and its adversarial counterpart's, averaged over images, one point "
        "per layer (input on the left, logits on the right), one line per eps (band: standard "
        "error), one panel per model. 0 means the layer did not change; 1 means its activation "
        "is uncorrelated with the clean one. Read it for where the perturbation grows: a curve "
        "that rises with depth shows a small pixel change amplified into a different "
        "representation; a model whose curve stays low until late layers resists longer.")
    Options = DissimilarityOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name)

    def new_reducers(self) -> dict[str, Any]:
        return {"layer": LayerDissimilarity()}

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0:
            self.reducers_for(batch)["layer"].update(self._select(batch.clean.activations),
                                                     self._select(batch.activations))

    def state_dict(self) -> dict[str, Any]:  # one reducer per condition, stored flat
        return {k: v["layer"] for k, v in super().state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict({k: {"layer": v} for k, v in state.items()})

    def tables(self) -> dict[str, pd.DataFrame]:
        frames = [with_condition(r["layer"].result(), k) for k, r in self.reducers.items()]
        return {"dissimilarity": concat_frames(frames)} if frames else {}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("dissimilarity")
        if df is None or df.empty:
            return []
        return [(f"Dissimilarity per layer under {attack}",
                 plots.plot_layer_dissimilarity(df[df["attack"] == attack], hue="eps", panel="model"))
                for attack in df["attack"].unique()]


@dataclass(frozen=True)
class ChannelDissimilarityOptions(AnalysisOptions):
    """Options of ``[analyses.dissimilarity_channels]``.

    Attributes:
        layers: the layers compared (``"all"`` or selectors).
        metric: ``"pearson"``, ``"spearman"`` or ``"cosine"``.
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    metric: str = option("spearman", choice("pearson", "spearman", "cosine"))


@register_analysis
class ChannelDissimilarityAnalysis(LayerOption, PerCondition):
    """1 - r (Pearson, Spearman or cosine) between clean and adversarial activations, per
    layer and per channel."""

    name = "dissimilarity_channels"
    title = "Dissimilarity per layer and channel, by metric (S1)"
    report_text = (
        "The clean-vs-adversarial dissimilarity of the per-layer analysis, with the metric of "
        "the config (Spearman, Pearson or cosine), per layer and per channel. The figure shows "
        "the per-layer curve; the channel table says which channels of a layer change most, to "
        "compare with the sensitivity ranking.")
    Options = ChannelDissimilarityOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name)
        self._metric = self.options.metric

    def new_reducers(self) -> dict[str, Any]:
        return {"layer": LayerDissimilarity(self._metric), "channel": ChannelDissimilarity(self._metric)}

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps == 0:
            return
        clean, adv = self._select(batch.clean.activations), self._select(batch.activations)
        for reducer in self.reducers_for(batch).values():
            reducer.update(clean, adv)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self.reducers:
            return {}
        layer = concat_frames([with_condition(r["layer"].result(), k) for k, r in self.reducers.items()])
        channel = concat_frames([with_condition(r["channel"].result(), k) for k, r in self.reducers.items()])
        return {"dissimilarity_by_metric": layer.assign(metric=self._metric),
                "dissimilarity_channels": channel.assign(metric=self._metric)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("dissimilarity_by_metric")
        if df is None or df.empty:
            return []
        metric = df["metric"].iloc[0]
        return [(f"1 - {metric} r per layer under {attack}, models compared",
                 plots.plot_layer_dissimilarity(df[df["attack"] == attack],
                                                ylabel=f"1 - {metric} r (clean vs adversarial)"))
                for attack in df["attack"].unique()]
