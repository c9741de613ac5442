"""Renders of each model's most sensitive channels (study S2), wrapping
:mod:`robustlens.visualization.render`::

    [analyses.featurevis]        # each model's top-k sensitive channels, rendered
    layers = "all"               # layers ranked (names, globs, "type:ReLU")
    top_k = 4
    steps = 256                  # render steps per channel
    eot_samples = 1              # > 1 for stochastic models (VOneNets)
    seed = 0

Channels are ranked under the first attack at its largest eps, like the sensitivity figure;
renders use the model's own input size (the clean images' size). Images are stored in the
tables as tidy pixel rows (:func:`robustlens.visualization.tables.pixel_rows`), so the
report's figures come from the Parquet files alone; the figures put the models side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis.sensitivity import ChannelSensitivity, top_k_channels
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    StudyAnalysis,
    condition_key,
    condition_str,
    count,
    layer_selector,
    merge_keyed,
    option,
    register_analysis,
)
from robustlens.study.analyses.helpers import LayerOption
from robustlens.visualization.figures import plot_image_rows
from robustlens.visualization.render import render
from robustlens.visualization.tables import pixel_rows, rows_to_image

__all__ = ["FeatureVisAnalysis", "FeatureVisOptions"]


@dataclass(frozen=True)
class FeatureVisOptions(AnalysisOptions):
    """Options of ``[analyses.featurevis]``.

    Attributes:
        layers: the layers whose channels are ranked (``"all"`` or selectors).
        top_k: how many channels are rendered per model.
        steps: render steps per channel.
        eot_samples: gradient samples per step (> 1 for stochastic models).
        seed: the renders' seed.
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    top_k: int = option(4, count(1))
    steps: int = option(256, count(1))
    eot_samples: int = option(1, count(1))
    seed: int = option(0, count(0))


def _render_size(hw: tuple[int, int], channels: int) -> tuple[int, int | None]:
    """(image side, model input side): 128 px upsampled for large RGB inputs, else native."""
    side = min(hw)
    if channels == 3 and side > 128:
        return 128, side
    return side, None


@register_analysis
class FeatureVisAnalysis(LayerOption, StudyAnalysis):
    """Each model's most sensitive channels (S2 ranking), rendered by activation maximization."""

    name = "featurevis"
    title = "What the most sensitive channels respond to: activation maximization (S2)"
    report_text = (
        "What the most sensitive channels respond to: each model's top channels under the first "
        "attack at its largest eps (the S2 ranking, input normalisation excluded), rendered by "
        "activation maximization, one row per model, ranked left to right. Compare the renders "
        "across models: the channels an attack moves most in a robust model often render as "
        "smoother, more object-like patterns than a standard model's high-frequency textures.")
    Options = FeatureVisOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name, rank_wrappers=False)
        self._top_k = self.options.top_k
        self._steps = self.options.steps
        self._eot = self.options.eot_samples
        self._seed = self.options.seed
        self._sensitivity: dict[tuple[str, float], ChannelSensitivity] = {}
        self._shape: tuple[int, int, int] | None = None

    def update_clean(self, batch: CleanBatch) -> None:
        c, h, w = batch.images.shape[1:]
        self._shape = (int(c), int(h), int(w))

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0:
            key = (batch.attack, batch.eps)
            self._sensitivity.setdefault(key, ChannelSensitivity()).update(
                self._select(batch.clean.activations), self._select(batch.activations))

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self._sensitivity or self._shape is None:
            return {}
        attack = next(iter(self._sensitivity))[0]
        eps = max(e for a, e in self._sensitivity if a == attack)
        table = self._sensitivity[(attack, eps)].result()
        top = top_k_channels(table, self._top_k, by=[])
        c, h, w = self._shape
        side, input_size = _render_size((h, w), c)
        frames = []
        for rank, (unit, sens) in enumerate(zip(top["unit"], top["sensitivity"], strict=True), 1):
            result = render(self.model, str(unit), image_size=side,
                            input_size=input_size or (h, w), steps=self._steps,
                            eot_samples=self._eot, seed=self._seed)
            frames.append(pixel_rows(result.images[0], attack=attack, eps=eps, rank=rank,
                                     unit=str(unit), sensitivity=float(sens),
                                     final_objective=float(-result.losses[-1])))
        return {"featurevis": pd.concat(frames, ignore_index=True)}

    def state_dict(self) -> dict[str, Any]:
        return {"shape": list(self._shape) if self._shape else None,
                "sensitivity": {condition_str(k): r.state_dict() for k, r in self._sensitivity.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._shape = tuple(state["shape"]) if state["shape"] else None
        self._sensitivity = {}
        for text, value in state["sensitivity"].items():
            reducer = ChannelSensitivity()
            reducer.load_state_dict(value)
            self._sensitivity[condition_key(text)] = reducer

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, FeatureVisAnalysis)
        self._shape = self._shape or other._shape
        merge_keyed(self._sensitivity, other._sensitivity)

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("featurevis")
        if df is None or df.empty:
            return []
        rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for model, g in df.groupby("model", sort=False):
            items = []
            for (rank, unit), cell in g.groupby(["rank", "unit"], sort=True):
                items.append((f"{rank}. {unit}", rows_to_image(cell)))
            rows[str(model)] = items
        attack, eps = df["attack"].iloc[0], float(df["eps"].iloc[0])
        title = f"Most sensitive channels under {attack} eps={eps:g}, rendered (rows: models)"
        return [(title, plot_image_rows(rows, title))]
