"""Channel and layer sensitivity (study S2), wrapping :mod:`robustlens.analysis.sensitivity`::

    [analyses.sensitivity]            # mean |clean - adversarial| per channel and layer
    layers = "all"                    # names, globs ("layer*.relu"), "type:ReLU", or a list
    top_k = 10
    classes = []                      # only the images of these classes (names or indices;
                                      # S2's "flamingos"); empty: every image
    neurons = 0                       # > 0: also the top neurons of each layer per eps

Conditions with eps = 0 are skipped. ``sensitivity_top`` ranks the ``top_k`` channels of every
model x attack x eps, across all layers (``scope = "overall"``) and within each layer
(``scope = "per_layer"``); ``sensitivity_neurons`` (with ``neurons``) ranks single elements of
each layer's activation (``neuron``: flat index; ``channel``, ``position``) the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis import plots
from robustlens.analysis.sensitivity import ChannelSensitivity, top_k_channels, top_k_neurons
from robustlens.errors import ConfigError, RobustlensError
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

__all__ = ["SensitivityAnalysis", "SensitivityOptions"]


@dataclass(frozen=True)
class SensitivityOptions(AnalysisOptions):
    """Options of ``[analyses.sensitivity]``.

    Attributes:
        layers: the layers measured (``"all"`` or selectors).
        top_k: how many channels the ``sensitivity_top`` table keeps (overall and per layer).
        classes: the classes whose images count (names or indices of the dataset's classes);
            empty: every image.
        neurons: neurons of each layer the ``sensitivity_neurons`` table keeps per eps (0: none;
            costs one float64 per activation element and layer while the study runs).
    """

    layers: str | tuple[str, ...] = option("all", layer_selector())
    top_k: int = option(10, count(1))
    classes: tuple[int | str, ...] = option((), lambda v, w: _classes(v, w))
    neurons: int = option(0, count(0))


def _classes(value: Any, where: str) -> tuple[int | str, ...]:
    items = [value] if isinstance(value, str | int) and not isinstance(value, bool) else value
    if not isinstance(items, list | tuple) or not all(
            isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in items):
        raise ConfigError(f"{where} must be a list of class names or indices (>= 0); received {value!r}.")
    return tuple(items)


@register_analysis
class SensitivityAnalysis(LayerOption, PerCondition):
    """S2 sensitivity sigma(F) = mean |F(x) - F(x')| per element, per channel and per layer."""

    name = "sensitivity"
    title = "Sensitive channels and layers (S2)"
    report_text = (
        "S2 sensitivity: the mean absolute change |F(x) - F(x')| of each channel's activation "
        "between clean and adversarial images, per element. The first figure ranks the most "
        "sensitive channels of each model at the largest eps (bars with their standard error; "
        "the label is layer#channel); the second shows each layer's mean sensitivity against "
        "depth, one line per eps. Channels at the top are where the attack acts; compare their "
        "layers across models, and render them with the featurevis analysis. The model's input "
        "normalisation is not ranked (it is a wrapper, not a layer of the architecture). With "
        "classes, only the images of those classes count; the tables hold the top-k of every "
        "layer at every eps (sensitivity_top, scope per_layer) and, with neurons, the top neurons.")
    Options = SensitivityOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.use_layer_option(model, model_name, rank_wrappers=False)
        self._top_k = self.options.top_k
        self._classes: list[int] | None = None
        if self.options.classes:
            from robustlens.data import resolve_class

            where = "[analyses.sensitivity].classes"
            try:
                chosen = [resolve_class(c, class_names, where=where) for c in self.options.classes]
            except RobustlensError as err:
                raise ConfigError(str(err)) from None
            if len(set(chosen)) != len(chosen):
                raise ConfigError(f"{where} names a class twice; received {list(self.options.classes)}.")
            self._classes = chosen

    def new_reducers(self) -> dict[str, Any]:
        return {"sensitivity": ChannelSensitivity(neurons=self.options.neurons > 0, classes=self._classes)}

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0:
            self.reducers_for(batch)["sensitivity"].update(self._select(batch.clean.activations),
                                                            self._select(batch.activations), batch.clean.labels)

    def tables(self) -> dict[str, pd.DataFrame]:
        if not self.reducers:
            return {}
        red = {k: r["sensitivity"] for k, r in self.reducers.items()}
        channels = concat_frames([with_condition(r.result(), k) for k, r in red.items()])
        layers = concat_frames([with_condition(r.layer_result(), k) for k, r in red.items()])
        top = concat_frames([top_k_channels(channels, self._top_k).assign(scope="overall"),
                       top_k_channels(channels, self._top_k, per_layer=True)
                       .assign(scope="per_layer")])
        out = {"sensitivity": channels, "sensitivity_layers": layers, "sensitivity_top": top}
        if self.options.neurons:
            k = self.options.neurons
            out["sensitivity_neurons"] = top_k_neurons(
                concat_frames([with_condition(r.neuron_result(k), key) for key, r in red.items()]), k, per_layer=True)
        return out

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        out = []
        top, layers = tables.get("sensitivity_top"), tables.get("sensitivity_layers")
        if top is None or layers is None or top.empty:
            return []
        for attack in top["attack"].unique():
            rows = top[(top["attack"] == attack) & (top["scope"] == "overall")]
            eps = rows["eps"].max()
            out.append((f"Most sensitive channels under {attack}, eps={eps:g}",
                        plots.plot_top_sensitivity(rows[rows["eps"] == eps])))
            out.append((f"Layer sensitivity under {attack}",
                        plots.plot_layer_sensitivity(layers[layers["attack"] == attack])))
        return out
