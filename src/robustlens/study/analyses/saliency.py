"""Saliency maps of the first images, clean vs adversarial (study S4), wrapping
:mod:`robustlens.visualization.saliency`::

    [analyses.saliency]
    methods = ["gradient", "guided_backprop", "smoothgrad", "integrated_gradients"]
    n_images = 4
    sigma = 0.15                 # SmoothGrad noise, fraction of the pixel range
    n_samples = 16
    ig_steps = 64                # integrated gradients' points on the path from black

Images and maps are stored as tidy pixel rows
(:func:`robustlens.visualization.tables.pixel_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    StudyAnalysis,
    choice,
    condition_key,
    condition_str,
    count,
    number,
    option,
    register_analysis,
    strings,
)
from robustlens.visualization.figures import plot_image_grid, saliency_heatmap
from robustlens.visualization.saliency import SALIENCY_METHODS, Output, saliency_method
from robustlens.visualization.tables import pixel_rows, rows_to_image

__all__ = ["SaliencyAnalysis", "SaliencyOptions"]


@dataclass(frozen=True)
class SaliencyOptions(AnalysisOptions):
    """Options of ``[analyses.saliency]``.

    Attributes:
        methods: saliency methods, any of :data:`~robustlens.visualization.saliency.SALIENCY_METHODS`.
        n_images: how many of the study's first images are explained.
        sigma: SmoothGrad's noise, a fraction of the pixel range (>= 0).
        n_samples: SmoothGrad's noisy copies.
        ig_steps: integrated gradients' points on the straight path from a black image (one
            forward and backward pass each; 64 by default).
        output: the score differentiated: ``"logit"`` or ``"log_softmax"`` (log p(y | x), the
            CSC413 lecture's).
    """

    methods: tuple[str, ...] = option(("gradient", "guided_backprop", "smoothgrad", "integrated_gradients"),
                                      strings(*SALIENCY_METHODS))
    n_images: int = option(4, count(1))
    sigma: float = option(0.15, number(0, hint=" (a fraction of the pixel range)"))
    n_samples: int = option(16, count(1))
    ig_steps: int = option(64, count(1))
    output: Output = option("logit", choice("logit", "log_softmax"))


@register_analysis
class SaliencyAnalysis(StudyAnalysis):
    """Saliency maps of the first images, clean and adversarial, per method (S4)."""

    name = "saliency"
    title = "Saliency maps, clean vs adversarial (S4)"
    report_text = (
        "Saliency maps of the study's first images: one grid per attack, with the images and "
        "each method's map as rows and, for each model, the clean image beside its adversarial "
        "version (the attack at its largest eps) as columns. Bright pixels are those the class "
        "score is most sensitive to (maps scaled per image). Compare across a pair: maps that "
        "move away from the object show the perturbation redirecting the model's evidence; "
        "compare across models: adversarially trained models are known for maps that follow the "
        "object's shape more closely (Tsipras et al., 2019).")
    Options = SaliencyOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self._methods = list(self.options.methods)
        self._n = self.options.n_images
        self._n_samples = self.options.n_samples
        self._sigma = self.options.sigma
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
                maps = saliency_heatmap(saliency_method(name, self.model, self._sigma, self._n_samples,
                                                        ig_steps=self.options.ig_steps,
                                                        output=self.options.output)
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
        images: dict[tuple[Any, ...], torch.Tensor] = {
            key: rows_to_image(cell) for key, cell in df.groupby(["model", "attack", "method", "image"], sort=False)}
        models = list(dict.fromkeys(df["model"]))
        methods = ["input"] + [m for m in dict.fromkeys(df["method"]) if m != "input"]
        indices = sorted(df["image"].unique())
        out = []
        for attack in [a for a in dict.fromkeys(df["attack"]) if a != "clean"]:
            eps = float(df.loc[df["attack"] == attack, "eps"].max())
            rows = [f"image {i}\n{m}" for i in indices for m in methods]
            columns, cells = [], {}
            for model in models:
                for cond, label in (("clean", f"{model}\nclean"), (attack, f"{model}\n{attack} {eps:g}")):
                    columns.append(label)
                    for i in indices:
                        for m in methods:
                            image = images.get((model, cond, m, i))
                            if image is not None:
                                cells[(f"image {i}\n{m}", label)] = image
            cmaps = {row: "inferno" for row in rows if not row.endswith("\ninput")}
            title = (f"Saliency, clean beside {attack} eps={eps:g} "
                     "(rows: image x method, columns: model x condition)")
            out.append((title, plot_image_grid(cells, rows, columns, title, cmaps)))
        return out
