"""S4's tools as study analyses, so they reach the report: first-layer weights, the top
dataset examples of chosen units, and DeepDream::

    [analyses.weights]              # the first convolution's kernels (a VOneBlock's Gabor bank)

    [analyses.dataset_examples]     # the images that most strongly activate each unit
    units = ["features.4#0", "features.4#1"]   # "layer#channel" (Lucent's "layer:channel" too)
    k = 6                           # examples per unit
    split = "study"                 # "study": the study's own images as they stream;
                                    # "train" / "test": that split of `dataset`, read in one pass
    dataset = ""                    # "fashion_mnist", "digits" or "imagenet" (with split)
    root = ""                       # the dataset's folder (imagenet; Fashion-MNIST's IDX files)
    n_images = 0                    # 0: every image of the split; else a seeded draw of that many
    seed = 0

    [analyses.deepdream]            # amplify what a layer already sees, on the first images
    layer = "features.4"            # a layer call name, or a channel "layer#C"
    n_images = 2
    octaves = 3
    steps = 10
    step_size = 0.01

Images are stored as tidy pixel rows (``image``, ``channel``, ``y``, ``x``, ``value``), so the
report draws them from the Parquet files alone; the figures put the models side by side.
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
from robustlens.study.analyses.contract import (
    AnalysisOptions,
    CleanBatch,
    StudyAnalysis,
    choice,
    count,
    number,
    option,
    register_analysis,
)
from robustlens.visualization.examples import DatasetExamples, dataset_examples
from robustlens.visualization.figures import plot_image_rows
from robustlens.visualization.tables import pixel_rows, rows_to_image

__all__ = ["DatasetExamplesAnalysis", "DatasetExamplesOptions", "DeepDreamAnalysis", "DeepDreamOptions",
           "WeightsAnalysis", "WeightsOptions"]


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _units(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(
            isinstance(u, str) and ("#" in u or ":" in u) for u in items):
        raise ConfigError(f"{where} must be a list of units \"layer#channel\" (e.g. \"features.4#0\"); "
                          f"received {value!r}.")
    return tuple(items)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string; received {value!r}.")
    return value


# ----------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightsOptions(AnalysisOptions):
    """Options of ``[analyses.weights]``.

    Attributes:
        max_filters: kernels drawn at most (the first ones).
    """

    max_filters: int = option(64, count(1))


@register_analysis
class WeightsAnalysis(StudyAnalysis):
    """The first layer's filters as images (a VOneBlock's simple-cell Gabor kernels) (S4)."""

    name = "weights"
    title = "First-layer weights (S4)"
    report_text = (
        'The filters of the first convolution of each model, drawn as images (one tile per output '
        'channel, colour channels as RGB where there are three, a shared symmetric colour scale '
        'otherwise). Adversarially trained and V1-like models tend to show smooth, oriented, '
        'Gabor-like filters; standard models often show noisier, high-frequency ones. Random '
        "initialisation is the reference for 'no structure'.")
    Options = WeightsOptions

    def tables(self) -> dict[str, pd.DataFrame]:
        from robustlens.models.vone import VOneBlock
        from robustlens.visualization.weights import first_conv, weight_grid

        block = next((m for m in self.model.modules() if isinstance(m, VOneBlock)), None)
        conv = block.simple_conv_q0 if block is not None else first_conv(self.model)
        weight: torch.Tensor = conv.weight
        layer = next(n for n, m in self.model.named_modules() if m is conv)
        grid = weight_grid(weight[: self.options.max_filters])
        return {"weights": pixel_rows(grid, layer=layer, n_filters=int(weight.shape[0]))}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("weights")
        if df is None or df.empty:
            return []
        rows = {str(model): [(str(g["layer"].iloc[0]), rows_to_image(g))]
                for model, g in df.groupby("model", sort=False)}
        return [("First-layer filters (each normalised; grey = 0)", plot_image_rows(rows, "First-layer filters"))]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def merge(self, other: StudyAnalysis) -> None:
        pass


# ---------------------------------------------------------------------------- dataset examples
@dataclass(frozen=True)
class DatasetExamplesOptions(AnalysisOptions):
    """Options of ``[analyses.dataset_examples]``.

    Attributes:
        units: the units, ``"layer#channel"``.
        k: examples per unit.
        split: ``"study"`` (the study's images as they stream), ``"train"`` or ``"test"``.
        dataset: the dataset read for ``"train"`` / ``"test"``.
        root: the dataset's folder (ImageNet; optional for the embedded ones).
        n_images: images looked at (a seeded draw; 0 for all).
        seed: seed of that draw.
    """

    units: tuple[str, ...] = option((), _units)
    k: int = option(6, count(1))
    split: str = option("study", choice("study", "train", "test"))
    dataset: str = option("", _text)
    root: str = option("", _text)
    n_images: int = option(0, count(0))
    seed: int = option(0, count(0))

    def __post_init__(self) -> None:
        if self.split != "study" and self.dataset not in ("fashion_mnist", "digits", "imagenet"):
            raise ConfigError(f"[analyses.dataset_examples]: split = {self.split!r} needs dataset = "
                              "\"fashion_mnist\", \"digits\" or \"imagenet\" (with root = the folder for "
                              f"imagenet); received dataset = {self.dataset!r}.")


@register_analysis
class DatasetExamplesAnalysis(StudyAnalysis):
    """The images (and receptive-field patches) that most strongly activate chosen units (S4)."""

    name = "dataset_examples"
    title = "Dataset examples: the images that most activate a unit (S4)"
    report_text = (
        'For each chosen unit, the images of the dataset (the split named in the options) that '
        "activate it most, strongest first, with their activation values. Read them beside the unit's "
        'feature visualization: what the unit responds to in real images. Units whose top images '
        'share no visible property are the ones whose renders are hardest to interpret.')
    Options = DatasetExamplesOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        o = self.options
        if not o.units:
            raise ConfigError("[analyses.dataset_examples].units must list the units to explain, e.g. "
                              "units = [\"features.4#0\"].")
        self._reducers = [DatasetExamples(model, u, k=o.k) for u in o.units]

    def update_clean(self, batch: CleanBatch) -> None:
        if self.options.split == "study":
            positions = torch.arange(batch.offset, batch.offset + batch.images.shape[0])
            for r in self._reducers:
                r.update(batch.images, positions)

    def tables(self) -> dict[str, pd.DataFrame]:
        o = self.options
        if o.split == "study":
            if any(r.n_seen == 0 for r in self._reducers):
                return {}
            sets = [r.result() for r in self._reducers]
            source = "study"
        else:
            from robustlens.data import load_dataset

            data = load_dataset(o.dataset, o.split, o.root or None)
            sets = dataset_examples(self.model, list(o.units), data, k=o.k, n_images=o.n_images or None,
                                    seed=o.seed, device=_device(self.model))
            source = f"{o.dataset}/{o.split}"
        frames = []
        for s in sets:
            for rank in range(len(s.values)):
                common = {"unit": s.unit, "rank": rank + 1, "index": int(s.indices[rank]),
                          "activation": float(s.values[rank]), "source": source}
                frames.append(pixel_rows(s.images[rank], kind="image", **common))
                frames.append(pixel_rows(s.crops[rank], kind="patch", **common))
        return {"dataset_examples": pd.concat(frames, ignore_index=True)} if frames else {}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("dataset_examples")
        if df is None or df.empty:
            return []
        out = []
        for unit, g in df.groupby("unit", sort=False):
            rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
            for (model, kind), cell in g.groupby(["model", "kind"], sort=False):
                rows[f"{model}\n{kind}"] = [(f"#{int(i)} {float(v['activation'].iloc[0]):.3g}", rows_to_image(v))
                                            for i, v in cell.groupby("index", sort=False)]
            title = f"Dataset examples of {unit} ({g['source'].iloc[0]})"
            out.append((title, plot_image_rows(rows, title)))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {str(i): r.state_dict() for i, r in enumerate(self._reducers)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, s in state.items():
            self._reducers[int(key)].load_state_dict(s)

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, DatasetExamplesAnalysis)
        for mine, theirs in zip(self._reducers, other._reducers, strict=True):
            mine.merge(theirs)


# ------------------------------------------------------------------------------------ deepdream
@dataclass(frozen=True)
class DeepDreamOptions(AnalysisOptions):
    """Options of ``[analyses.deepdream]``.

    Attributes:
        layer: a layer call name (its mean squared activation is amplified) or ``"layer#C"``.
        n_images: the first images of the study dreamed on.
        octaves: scales.
        steps: gradient steps per octave.
        step_size: pixels moved per step (normalised gradient).
        seed: seed of the jitter.
    """

    layer: str = option("", _text)
    n_images: int = option(2, count(1))
    octaves: int = option(3, count(1))
    steps: int = option(10, count(0))
    step_size: float = option(0.01, number(0, 1, open_low=True))
    seed: int = option(0, count(0))


@register_analysis
class DeepDreamAnalysis(StudyAnalysis):
    """DeepDream on the study's first images: what a layer already sees, amplified (S4)."""

    name = "deepdream"
    title = "DeepDream on the first images (S4)"
    report_text = (
        'DeepDream: the first images of the study, changed by gradient ascent on the norm of a '
        "layer's activation (octaves and jitter as in the options), beside the originals. It "
        'exaggerates what the layer already sees in each image: early layers bring out edges and '
        'textures, later ones object parts. Compare models on the same images.')
    Options = DeepDreamOptions

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        if not self.options.layer:
            raise ConfigError("[analyses.deepdream].layer must name a layer call (e.g. \"features.4\") or a "
                              "channel (\"features.4#0\").")
        self._images: dict[int, torch.Tensor] = {}

    def update_clean(self, batch: CleanBatch) -> None:
        room = self.options.n_images - batch.offset
        for k in range(max(0, min(room, batch.images.shape[0]))):
            self._images[batch.offset + k] = batch.images[k].detach().cpu().clone()

    def tables(self) -> dict[str, pd.DataFrame]:
        from robustlens.visualization.deepdream import deepdream

        if not self._images:
            return {}
        o = self.options
        positions = sorted(self._images)
        x = torch.stack([self._images[p] for p in positions]).to(_device(self.model))
        side = x.shape[-1]
        dream = deepdream(self.model, x, o.layer, octaves=o.octaves, steps=o.steps, step_size=o.step_size,
                          jitter=max(1, side // 28), input_size=side if x.shape[1] == 1 else None,
                          seed=o.seed).cpu()
        frames = []
        for i, p in enumerate(positions):
            frames.append(pixel_rows(x[i].cpu(), layer=o.layer, image=p, kind="input"))
            frames.append(pixel_rows(dream[i], layer=o.layer, image=p, kind="dream"))
        return {"deepdream": pd.concat(frames, ignore_index=True)}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        df = tables.get("deepdream")
        if df is None or df.empty:
            return []
        rows: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for model, g in df.groupby("model", sort=False):
            items = []
            for (image, kind), cell in g.groupby(["image", "kind"], sort=True):
                items.append((f"#{int(image)} {kind}", rows_to_image(cell)))
            rows[str(model)] = items
        title = f"DeepDream on {df['layer'].iloc[0]} (input, dream)"
        return [(title, plot_image_rows(rows, title))]

    def state_dict(self) -> dict[str, Any]:
        return {str(p): x for p, x in self._images.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._images = {int(p): x for p, x in state.items()}

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, DeepDreamAnalysis)
        self._images.update(other._images)
