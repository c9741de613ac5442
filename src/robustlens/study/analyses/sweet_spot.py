"""The FGSM sweet spot of two models (study S2), from the study's own eps sweep::

    [analyses.per_example]          # the per-image results the sweet spot is read from

    [analyses.sweet_spot]           # (also accepted as [comparisons.sweet_spot])
    models = ["robust", "standard"] # A (expected to hold out longer), B
    attack = ""                     # the sweep's attack label; "" = the study's only attack
    threshold = 0.5                 # the range: where only_a_right >= threshold * its maximum
    n_examples = 8                  # labelled image pairs listed (and drawn)

    [analyses.sweet_spot_images]    # optional: keep the first images, clean and adversarial,
    n_images = 64                   # so the report can draw the labelled image pairs

The comparison reads the ``per_example`` table (no new attack) with
:func:`robustlens.evaluation.sweet_spot.sweet_spot_from_table` and writes ``sweet_spot`` (one
row per eps: both accuracies, ``only_a_right``, ``only_b_right``, ``in_sweet_spot``, and the
range ``best_eps, eps_low, eps_high, crossing_eps``) and ``sweet_spot_examples`` (examples at
``best_eps`` where A is right and B wrong, with the true label and both predictions; drawn
from the images kept by ``sweet_spot_images`` when that analysis is enabled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.errors import ConfigError
from robustlens.evaluation.sweet_spot import (
    SweetSpotRange,
    plot_sweet_spot,
    plot_sweet_spot_pairs,
    sweet_spot_from_table,
)
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    AnalysisOptions,
    CleanBatch,
    ComparisonOptions,
    ModelComparison,
    StudyAnalysis,
    condition_key,
    condition_str,
    count,
    number,
    option,
    register_analysis,
    register_comparison,
)
from robustlens.visualization.tables import pixel_rows, rows_to_image

__all__ = ["SweetSpotComparison", "SweetSpotImages", "SweetSpotImagesOptions", "SweetSpotOptions"]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string (an attack label of the study); received {value!r}.")
    return value


@dataclass(frozen=True)
class SweetSpotOptions(ComparisonOptions):
    """Options of ``[analyses.sweet_spot]``.

    Attributes:
        models: the two models compared, A then B.
        attack: the label of the attack whose eps sweep is read; ``""``: the study's only attack.
        threshold: the range is where ``only_a_right`` reaches this fraction of its maximum.
        n_examples: examples listed at the sweet spot's centre.
    """

    attack: str = option("", _text)
    threshold: float = option(0.5, number(0, 1, open_low=True))
    n_examples: int = option(8, count(0))


@register_comparison
class SweetSpotComparison(ModelComparison):
    """The eps range where model A is still right and model B already wrong (S2's sweet spot)."""

    name = "sweet_spot"
    title = "The sweet spot: where the robust model is still right and the standard one wrong (S2)"
    report_text = (
        "Accuracy of the two named models against eps under one attack, read from the study's own "
        'per-example results, with the share of images that model A gets right and model B wrong. The '
        'sweet spot is the eps range around the maximum of that share (within the threshold of the '
        'options): there the perturbation fools the standard model but not the robust one, which is '
        'where their differences are easiest to show. The pairs grid shows such images with their '
        "eps, true label and each model's prediction.")
    Options = SweetSpotOptions

    def compare(self, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        models = self.options.models
        if len(models) != 2:
            raise ConfigError("[analyses.sweet_spot].models must name two models, A (expected to hold out "
                              f"longer) then B, e.g. models = [\"robust\", \"standard\"]; received {list(models)!r}.")
        per = tables.get("per_example")
        if per is None or per.empty:
            raise ConfigError("the sweet spot is read from the per-image results: add [analyses.per_example] "
                              "to the study config.")
        attack = self.options.attack or None
        spot = sweet_spot_from_table(per, models, attack=attack, threshold=self.options.threshold,
                                     n_examples=self.options.n_examples)
        table = spot.table.assign(model_a=models[0], model_b=models[1], attack=spot.attack,
                                  best_eps=spot.best_eps, eps_low=spot.eps_low, eps_high=spot.eps_high,
                                  crossing_eps=spot.crossing_eps)
        out = {"sweet_spot": table}
        examples = spot.examples
        images = tables.get("sweet_spot_images")
        kept: set[int] = set()
        if images is not None and not images.empty and not examples.empty:
            kept = set(images.loc[images["model"].astype(str) == models[0], "image"].astype(int).unique())
            at_best = per[per["example"].isin(kept)]
            if not at_best.empty:  # prefer examples whose images were kept, so the report can draw them
                drawn = sweet_spot_from_table(at_best, models, attack=attack, threshold=self.options.threshold,
                                              n_examples=self.options.n_examples).examples
                examples = drawn if not drawn.empty else examples
        names = tables.get("sweet_spot_class_names")
        if names is not None and not names.empty:
            lookup = dict(zip(names["class_index"].astype(int), names["class_name"].astype(str), strict=False))
            for c in ("label", "prediction_a", "prediction_b"):
                examples = examples.assign(**{f"{c}_name": [lookup.get(int(v), str(v)) for v in examples[c]]})
        out["sweet_spot_examples"] = examples.assign(model_a=models[0], model_b=models[1], attack=spot.attack,
                                                     eps=spot.best_eps)
        if kept and not examples.empty and set(examples["example"]) <= kept:
            assert images is not None
            rows = images[images["image"].isin(examples["example"]) & images["model"].astype(str).isin(models)
                          & ((images["attack"] == "clean")
                             | ((images["attack"] == spot.attack) & (images["eps"] == spot.best_eps)))]
            out["sweet_spot_pairs"] = rows.reset_index(drop=True)
        return out

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        t = tables.get("sweet_spot")
        if t is None or t.empty:
            return []
        first = t.iloc[0]
        names = (str(first["model_a"]), str(first["model_b"]))
        spot = SweetSpotRange(t, float(first["best_eps"]), float(first["eps_low"]), float(first["eps_high"]),
                              float(first["crossing_eps"]), tables.get("sweet_spot_examples", pd.DataFrame()),
                              names, str(first["attack"]))
        title = f"Sweet spot: {names[0]} vs {names[1]} under {spot.attack}"
        out = [(title, plot_sweet_spot(spot, title))]
        pairs = tables.get("sweet_spot_pairs")
        examples = tables.get("sweet_spot_examples")
        if pairs is not None and not pairs.empty and examples is not None and not examples.empty:
            lookup: dict[int, str] = {}
            for c in ("label", "prediction_a", "prediction_b"):
                if f"{c}_name" in examples.columns:
                    lookup.update(zip(examples[c].astype(int), examples[f"{c}_name"].astype(str), strict=True))
            class_names = [lookup.get(i, str(i)) for i in range(max(lookup, default=-1) + 1)]
            clean: list[torch.Tensor] = []
            adv_a: list[torch.Tensor] = []
            adv_b: list[torch.Tensor] = []
            for e in examples["example"]:
                cell = pairs[pairs["image"] == e]
                clean.append(rows_to_image(cell[(cell["attack"] == "clean") & (cell["model"] == names[0])]))
                for model, bucket in ((names[0], adv_a), (names[1], adv_b)):
                    bucket.append(rows_to_image(cell[(cell["attack"] != "clean") & (cell["model"] == model)]))
            title = f"Sweet spot at eps={spot.best_eps:g}: {names[0]} right, {names[1]} wrong"
            out.append((title, plot_sweet_spot_pairs(torch.stack(clean), torch.stack(adv_a), torch.stack(adv_b),
                                                     examples, class_names, eps=spot.best_eps, names=names)))
        return out


@dataclass(frozen=True)
class SweetSpotImagesOptions(AnalysisOptions):
    """Options of ``[analyses.sweet_spot_images]``.

    Attributes:
        n_images: the first images (by data position) kept, clean and under every attack x eps.
    """

    n_images: int = option(64, count(1))


@register_analysis
class SweetSpotImages(StudyAnalysis):
    """The first images of the study, clean and adversarial, kept for the sweet spot's image pairs."""

    name = "sweet_spot_images"
    title = "Images kept for the sweet spot's labelled pairs (S2)"
    report_text = (
        'Keeps the clean and adversarial pixels of the first images of each condition so that the '
        "sweet-spot comparison can draw labelled image pairs (eps, true label, each model's "
        'prediction). It draws no figure of its own; its table feeds the sweet-spot section.')
    Options = SweetSpotImagesOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self._images: dict[str, dict[int, torch.Tensor]] = {}  # condition -> image position -> (C, H, W)

    def _keep(self, key: str, images: torch.Tensor, offset: int) -> None:
        room = self.options.n_images - offset
        for k in range(max(0, min(room, images.shape[0]))):
            self._images.setdefault(key, {})[offset + k] = images[k].detach().cpu().clone()

    def update_clean(self, batch: CleanBatch) -> None:
        self._keep(condition_str(("clean", 0.0)), batch.images, batch.offset)

    def update(self, batch: AnalysisBatch) -> None:
        self._keep(condition_str((batch.attack, batch.eps)), batch.images, batch.clean.offset)

    def tables(self) -> dict[str, pd.DataFrame]:
        frames = []
        for key, images in self._images.items():
            attack, eps = condition_key(key)
            for position, x in sorted(images.items()):
                frames.append(pixel_rows(x, attack=attack, eps=eps, image=position))
        if not frames:
            return {}
        names = pd.DataFrame({"class_index": range(len(self.class_names)), "class_name": list(self.class_names)})
        return {"sweet_spot_images": pd.concat(frames, ignore_index=True), "sweet_spot_class_names": names}

    def state_dict(self) -> dict[str, Any]:
        return {key: {str(p): x for p, x in images.items()} for key, images in self._images.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._images = {key: {int(p): x for p, x in images.items()} for key, images in state.items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, SweetSpotImages)
        for key, images in other._images.items():
            self._images.setdefault(key, {}).update(images)
