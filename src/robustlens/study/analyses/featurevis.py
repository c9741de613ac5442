"""Renders of each model's most sensitive channels (study S2), wrapping
:mod:`robustlens.visualization.render`::

    [analyses.featurevis]        # each model's top-k sensitive channels, rendered
    layers = "all"               # layers ranked (names, globs, "type:ReLU")
    top_k = 4
    steps = 256                  # render steps per channel
    eot_samples = 1              # > 1 for stochastic models (VOneNets)
    seed = 0
    per_eps = false              # true: rank and render at every eps, not only the largest
    per_layer = false            # true: the top-k of each layer, not of all layers together

Channels are ranked under the first attack, by default at its largest eps across all the
ranked layers, like the sensitivity figure. ``per_eps`` ranks at every eps of that attack and
``per_layer`` within each layer (the S2 slides: top-k per layer and per eps, robust beside
standard); a channel that tops several rankings is rendered once. The cost is one render of
``steps`` gradient steps per distinct channel: up to ``top_k`` x eps x layers per model.
Renders use the model's own input size (the clean images' size). Images are stored in the
tables as tidy pixel rows (:func:`robustlens.visualization.tables.pixel_rows`), so the
report's figures come from the Parquet files alone; the figures put the models side by side
(a grid with one row per eps, or per layer, and one group of columns per model).
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
from robustlens.errors import ConfigError
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
from robustlens.visualization.figures import plot_image_groups, plot_image_rows
from robustlens.visualization.render import RenderResult, render
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
        per_eps: rank and render at every eps of the first attack (default: its largest only).
        per_layer: the ``top_k`` channels of each ranked layer (default: of all layers together).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    top_k: int = option(4, count(1))
    steps: int = option(256, count(1))
    eot_samples: int = option(1, count(1))
    seed: int = option(0, count(0))
    per_eps: bool = option(False, lambda v, w: _flag(v, w))
    per_layer: bool = option(False, lambda v, w: _flag(v, w))


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false; received {value!r}.")
    return value


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
        "activation maximization, one row per model, ranked left to right; with per_eps or "
        "per_layer, a grid with one row per eps (or per layer) and the models side by side, each "
        "with its top channels there (per_layer: one figure per layer). Compare the renders "
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
        all_eps = sorted(e for a, e in self._sensitivity if a == attack)
        scope = "per_layer" if self.options.per_layer else "overall"
        c, h, w = self._shape
        side, input_size = _render_size((h, w), c)
        renders: dict[str, RenderResult] = {}  # a channel topping several rankings is rendered once
        frames = []
        for eps in all_eps if self.options.per_eps else all_eps[-1:]:
            table = self._sensitivity[(attack, eps)].result()
            top = top_k_channels(table, self._top_k, per_layer=self.options.per_layer, by=[])
            for rank, unit, layer, sens in zip(top["rank"], top["unit"], top["layer"], top["sensitivity"],
                                               strict=True):
                unit = str(unit)
                if unit not in renders:
                    renders[unit] = render(self.model, unit, image_size=side, input_size=input_size or (h, w),
                                           steps=self._steps, eot_samples=self._eot, seed=self._seed)
                result = renders[unit]
                frames.append(pixel_rows(result.images[0], attack=attack, eps=eps, scope=scope, layer=str(layer),
                                         rank=int(rank), unit=unit, sensitivity=float(sens),
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
        attack = df["attack"].iloc[0]
        per_layer = "scope" in df and bool((df["scope"] == "per_layer").any())
        all_eps = sorted(df["eps"].unique())
        if not per_layer and len(all_eps) == 1:
            rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
            for model, g in df.groupby("model", sort=False):
                rows[str(model)] = [(f"{rank}. {unit}", rows_to_image(cell))
                                    for (rank, unit), cell in g.groupby(["rank", "unit"], sort=True)]
            title = f"Most sensitive channels under {attack} eps={all_eps[0]:g}, rendered (rows: models)"
            return [(title, plot_image_rows(rows, title))]
        models = [str(m) for m in dict.fromkeys(df["model"])]
        out = []
        if not per_layer:  # rows: eps
            title = f"Most sensitive channels under {attack} at each eps, rendered (columns: models)"
            out.append((title, _grid(df, "eps", models, title)))
        elif len(all_eps) == 1:  # rows: layers
            title = (f"Most sensitive channels of each layer under {attack} eps={all_eps[0]:g}, rendered "
                     "(columns: models)")
            out.append((title, _grid(df, "layer", models, title)))
        else:  # one figure per layer, rows: eps
            for layer, g in df.groupby("layer", sort=False):
                title = f"Most sensitive channels of {layer} under {attack} at each eps, rendered (columns: models)"
                out.append((title, _grid(g, "eps", models, title)))
        return out


def _grid(df: pd.DataFrame, by: str, models: list[str], title: str) -> Figure:
    """Renders on a grid: one row per value of ``by`` (eps or layer), one group of columns per model."""
    def label(value: Any) -> str:
        return f"eps={value:g}" if by == "eps" else str(value)

    order = sorted(df[by].unique()) if by == "eps" else list(dict.fromkeys(df[by]))
    cells: dict[tuple[str, str], list[tuple[str, torch.Tensor]]] = {}
    for (model, value), g in df.groupby(["model", by], sort=False):
        cells[(label(value), str(model))] = [(f"{rank}. {unit}", rows_to_image(cell))
                                             for (rank, unit), cell in g.groupby(["rank", "unit"], sort=True)]
    return plot_image_groups(cells, [label(v) for v in order], models, title)
