"""Study plug-ins: renders of the most sensitive channels (S2), saliency maps (S4).

Registered with :func:`robustlens.study.analyses.register_analysis` when imported (by
:mod:`robustlens.study.analyses`), enabled in a study config by their tables::

    [analyses.featurevis]        # S2: each model's top-k sensitive channels, rendered
    layers = "all"               # layers ranked (names, globs, "type:ReLU")
    top_k = 4
    steps = 256                  # render steps per channel
    eot_samples = 1              # > 1 for stochastic models (VOneNets)
    seed = 0

    [analyses.saliency]          # S4: saliency of the first images, clean vs adversarial
    methods = ["gradient", "guided_backprop", "smoothgrad", "integrated_gradients"]
    n_images = 4
    sigma = 0.15                 # SmoothGrad noise, fraction of the pixel range
    n_samples = 16

Channels are ranked under the first attack at its largest eps, like the sensitivity figure;
renders use the model's own input size (the clean images' size). Images are stored in the
tables as tidy pixel rows (``image``, ``channel``, ``y``, ``x``, ``value``), so the report's
figures come from the Parquet files alone; the figures put the models side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis.sensitivity import ChannelSensitivity, top_k_channels
from robustlens.errors import ConfigError
from robustlens.study.analyses import (
    AnalysisBatch,
    CleanBatch,
    StudyAnalysis,
    condition_key,
    condition_str,
    merge_keyed,
    register_analysis,
)
from robustlens.study.analyses_extra import _count, _layer_list, _Select
from robustlens.visualization.figures import plot_image_rows, saliency_heatmap
from robustlens.visualization.render import render
from robustlens.visualization.saliency import (
    Attribution,
    GradientXInput,
    GuidedBackprop,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)

__all__ = ["FeatureVisAnalysis", "SaliencyAnalysis", "pixel_rows", "rows_to_image"]

SALIENCY_METHODS = ("gradient", "gradient_x_input", "guided_backprop", "smoothgrad",
                    "integrated_gradients")


def pixel_rows(pixels: torch.Tensor, /, **columns: Any) -> pd.DataFrame:
    """A (C, H, W) image as tidy rows ``channel, y, x, value`` plus constant ``columns``."""
    c, h, w = pixels.shape
    grid = np.indices((c, h, w)).reshape(3, -1)
    df = pd.DataFrame({"channel": grid[0], "y": grid[1], "x": grid[2],
                       "value": pixels.detach().float().cpu().reshape(-1).numpy()})
    for name, value in reversed(list(columns.items())):
        df.insert(0, name, value)
    return df


def rows_to_image(rows: pd.DataFrame) -> torch.Tensor:
    """Inverse of :func:`pixel_rows`: (C, H, W)."""
    c, h, w = (int(rows[k].max()) + 1 for k in ("channel", "y", "x"))
    out = np.zeros((c, h, w), dtype=np.float32)
    out[rows["channel"], rows["y"], rows["x"]] = rows["value"]
    return torch.from_numpy(out)


def _render_size(hw: tuple[int, int], channels: int) -> tuple[int, int | None]:
    """(image side, model input side): 128 px upsampled for large RGB inputs, else native."""
    side = min(hw)
    if channels == 3 and side > 128:
        return 128, side
    return side, None


@register_analysis
class FeatureVisAnalysis(StudyAnalysis):
    """Each model's most sensitive channels (S2 ranking), rendered by activation maximization."""

    name = "featurevis"
    title = "What the most sensitive channels respond to: activation maximization (S2)"
    option_defaults: ClassVar[dict[str, Any]] = {"layers": "all", "top_k": 4, "steps": 256,
                                                 "eot_samples": 1, "seed": 0}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        where = "[analyses.featurevis]"
        self._layers = _layer_list(self.options["layers"], f"{where}.layers")
        self._select = _Select(model, self._layers, f"{where}.layers")
        self._top_k = _count(self.options["top_k"], f"{where}.top_k", 1)
        self._steps = _count(self.options["steps"], f"{where}.steps", 1)
        self._eot = _count(self.options["eot_samples"], f"{where}.eot_samples", 1)
        self._seed = _count(self.options["seed"], f"{where}.seed", 0)
        self._sensitivity: dict[tuple[str, float], ChannelSensitivity] = {}
        self._shape: tuple[int, int, int] | None = None

    def layers(self) -> list[str] | None:
        return self._layers

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


def saliency_method(name: str, model: nn.Module, sigma: float, n_samples: int, *, ig_steps: int = 64,
                    seed: int | None = None) -> Attribution:
    """The attribution method named ``name`` (one of ``SALIENCY_METHODS``) for ``model``."""
    if name == "gradient":
        return Saliency(model)
    if name == "gradient_x_input":
        return GradientXInput(model)
    if name == "guided_backprop":
        return GuidedBackprop(model)
    if name == "integrated_gradients":
        return IntegratedGradients(model, n_steps=ig_steps)
    if seed is None:
        return SmoothGrad(Saliency(model), sigma=sigma, n_samples=n_samples)
    return SmoothGrad(Saliency(model), sigma=sigma, n_samples=n_samples, seed=seed)


@register_analysis
class SaliencyAnalysis(StudyAnalysis):
    """Saliency maps of the first images, clean and adversarial, per method (S4)."""

    name = "saliency"
    title = "Saliency maps, clean vs adversarial (S4)"
    option_defaults: ClassVar[dict[str, Any]] = {
        "methods": ["gradient", "guided_backprop", "smoothgrad", "integrated_gradients"],
        "n_images": 4, "sigma": 0.15, "n_samples": 16}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        where = "[analyses.saliency]"
        methods = self.options["methods"]
        if isinstance(methods, str):
            methods = [methods]
        bad = [m for m in methods if m not in SALIENCY_METHODS] if isinstance(methods, list) \
            else [methods]
        if bad or not methods:
            raise ConfigError(f"{where}.methods must be a list of {', '.join(SALIENCY_METHODS)}; "
                              f"received {self.options['methods']!r}.")
        self._methods = list(methods)
        self._n = _count(self.options["n_images"], f"{where}.n_images", 1)
        self._n_samples = _count(self.options["n_samples"], f"{where}.n_samples", 1)
        sigma = self.options["sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or sigma < 0:
            raise ConfigError(f"{where}.sigma must be a number >= 0 (a fraction of the pixel "
                              f"range); received {sigma!r}.")
        self._sigma = float(sigma)
        self._clean: tuple[torch.Tensor, torch.Tensor] | None = None
        self._adv: dict[tuple[str, float], torch.Tensor] = {}

    def update_clean(self, batch: CleanBatch) -> None:
        if batch.index == 0:  # the study's first images
            self._clean = (batch.images[: self._n].detach().cpu().clone(),
                           batch.labels[: self._n].detach().cpu().clone())

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps != 0 and batch.clean.index == 0:
            self._adv[(batch.attack, batch.eps)] = batch.images[: self._n].detach().cpu().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"clean": list(self._clean) if self._clean else None,
                "adversarial": {condition_str(k): x for k, x in self._adv.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._clean = (state["clean"][0], state["clean"][1]) if state["clean"] else None
        self._adv = {condition_key(text): x for text, x in state["adversarial"].items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, SaliencyAnalysis)
        if self._clean is None and other._clean is not None:  # the first batch was the other's
            self._clean, self._adv = other._clean, dict(other._adv)

    def tables(self) -> dict[str, pd.DataFrame]:
        if self._clean is None:
            return {}
        images, labels = self._clean
        conditions: list[tuple[str, float, torch.Tensor]] = [("clean", 0.0, images)]
        for attack in dict.fromkeys(a for a, _ in self._adv):
            eps = max(e for a, e in self._adv if a == attack)
            conditions.append((attack, eps, self._adv[(attack, eps)]))
        frames = []
        for attack, eps, x in conditions:
            for i in range(len(x)):
                frames.append(pixel_rows(x[i], attack=attack, eps=eps, method="input", image=i,
                                         label=int(labels[i])))
            for name in self._methods:
                device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
                maps = saliency_heatmap(saliency_method(name, self.model, self._sigma, self._n_samples)
                                        .attribute(x.clamp(0, 1).to(device), target=labels.to(device))).cpu()
                for i in range(len(x)):
                    frames.append(pixel_rows(maps[i][None], attack=attack, eps=eps, method=name,
                                             image=i, label=int(labels[i])))
        return {"saliency": pd.concat(frames, ignore_index=True)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("saliency")
        if df is None or df.empty:
            return []
        out = []
        for attack in [a for a in df["attack"].unique() if a != "clean"]:
            eps = float(df.loc[df["attack"] == attack, "eps"].max())
            rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
            for model, g in df.groupby("model", sort=False):
                for cond, label in (("clean", "clean"), (attack, f"{attack} {eps:g}")):
                    sel = g[(g["attack"] == cond) & ((g["eps"] == eps) | (cond == "clean"))]
                    for method in sel["method"].unique():
                        cells = sel[sel["method"] == method]
                        rows[f"{model}\n{method}\n{label}"] = [
                            (f"image {i}", rows_to_image(cells[cells["image"] == i]))
                            for i in sorted(cells["image"].unique())]
            title = f"Saliency, clean vs {attack} eps={eps:g} (rows: model x method x input)"
            out.append((title, plot_image_rows(rows, title)))
        return out
