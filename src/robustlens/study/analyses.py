"""Study analyses: the plug-in contract between an analysis and the study runner.

A study analysis is a class registered with :func:`register_analysis`. For each model of a
study the runner builds one instance, records the layers it asks for, and feeds it:

- ``update_clean(batch)`` once per data batch, with the clean images, labels, logits and the
  recorded clean activations;
- ``update(batch)`` once per data batch and attack x eps, with the clean *and* adversarial
  images, logits and activations (:class:`AnalysisBatch`).

At the end ``tables()`` returns named tidy DataFrames (the runner adds a ``model`` column,
concatenates the models and saves each table as ``results/<table>.parquet``), and the class
method ``figures(tables)`` turns the concatenated tables into titled matplotlib figures that
the report shows. Analyses keep only running sums (streaming reducers), so their memory does
not grow with the number of images; ``state_dict`` / ``load_state_dict`` expose those sums
(tensors and plain containers only: the runner saves them as resume points and reads them
back with ``torch.load(weights_only=True)``), and ``merge(other)`` adds another instance's
sums (the runner merges the workers of a ``torchrun`` launch on rank 0). The result must not
depend on how the batches were split between instances.

In a study config an analysis is enabled by its table, its options being the table's keys::

    [analyses.dissimilarity]
    layers = "all"

To add an analysis: subclass :class:`StudyAnalysis` in its own module, set ``name`` and
``option_defaults``, decorate it with ``@register_analysis``, and import that module at the end
of this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis.dissimilarity import LayerDissimilarity
from robustlens.attacks import AttackResult
from robustlens.errors import ConfigError, suggest

__all__ = ["ANALYSES", "AnalysisBatch", "CleanBatch", "Condition", "StudyAnalysis", "condition_key", "condition_str",
           "merge_keyed", "register_analysis"]


@dataclass(frozen=True)
class CleanBatch:
    """One batch of clean data seen by a model.

    Attributes:
        images: (B, C, H, W) pixels in [0, 1].
        labels: (B,) true classes.
        logits: (B, K) the model's outputs.
        activations: recorded layer name -> (B, ...) activation (empty if nothing recorded).
        index: the batch's position in the study's data order (0 is the first batch).
        offset: the position of the batch's first image in the study's data order.

    Batches arrive in data order on one worker; with several workers (or a resumed run)
    each worker sees every ``world_size``-th batch, so use ``index`` / ``offset`` rather
    than counting batches.
    """

    images: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    activations: Mapping[str, torch.Tensor]
    index: int = 0
    offset: int = 0


@dataclass(frozen=True)
class AnalysisBatch:
    """One batch under one attack at one eps, with its clean counterpart.

    Attributes:
        attack: the attack's label in the study.
        eps: the attack's radius (pixel units).
        clean: the clean batch.
        images: the adversarial images.
        logits: the model's logits on them.
        activations: the recorded activations of the adversarial images.
        norm: the attack's norm (``"inf"`` or ``"2"``).
        result: the attack's per-example outcome (success, L-inf / L2 norms, minimal norm).
    """

    attack: str
    eps: float
    clean: CleanBatch
    images: torch.Tensor
    logits: torch.Tensor
    activations: Mapping[str, torch.Tensor]
    norm: str = "inf"
    result: AttackResult | None = None


class StudyAnalysis:
    """Base class of study analyses (see the module docstring for the contract).

    Args:
        model_name: the model's label in the study.
        model: the model (in eval mode; do not change it).
        class_names: names of the dataset's classes.
        **options: the analysis' options from the config (validated against
            ``option_defaults``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        self.model_name = model_name
        self.model = model
        self.class_names = tuple(class_names)
        self.options = {**self.option_defaults, **options}

    def layers(self) -> list[str] | None:
        """Layers to record: names, ``None`` for every leaf module, ``[]`` for none."""
        return []

    def update_clean(self, batch: CleanBatch) -> None:
        """Add a clean batch (default: nothing)."""

    def update(self, batch: AnalysisBatch) -> None:
        """Add an adversarial batch (default: nothing)."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Named result tables (without the ``model`` column)."""
        return {}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        """Titled figures drawn from the tables of every model (with a ``model`` column)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """The running sums (tensors and plain containers)."""
        raise NotImplementedError(f"analysis {self.name!r} does not implement state_dict(), so a run "
                                  "using it cannot be resumed or distributed")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s sums."""
        raise NotImplementedError(f"analysis {self.name!r} does not implement load_state_dict()")

    def merge(self, other: StudyAnalysis) -> None:
        """Add ``other``'s sums (same analysis, same model, other batches) to this one."""
        raise NotImplementedError(f"analysis {self.name!r} does not implement merge(), so it cannot run "
                                  "under torchrun with several processes")


Condition = tuple[str, float]  # (attack label, eps); ("clean", 0.0) for clean images


def condition_str(key: Condition) -> str:
    """``("pgd", 0.1)`` -> ``"pgd@0.1"``: a condition as a state-dict key (eps exactly round-trips)."""
    return f"{key[0]}@{key[1]!r}"


def condition_key(text: str) -> Condition:
    """The inverse of :func:`condition_str`."""
    attack, _, eps = text.rpartition("@")
    return attack, float(eps)


def merge_keyed(mine: dict[Any, Any], theirs: dict[Any, Any]) -> None:
    """Merge dicts of reducers (or of dicts of reducers) key by key; keys only in ``theirs`` are taken."""
    for key, value in theirs.items():
        if key not in mine:
            mine[key] = value
        elif isinstance(value, dict):
            merge_keyed(mine[key], value)
        else:
            mine[key].merge(value)


ANALYSES: dict[str, type[StudyAnalysis]] = {}


def register_analysis(cls: type[StudyAnalysis]) -> type[StudyAnalysis]:
    """Class decorator adding a study analysis under ``cls.name``."""
    if not cls.name or cls.name in ANALYSES:
        raise ValueError(f"analysis name {cls.name!r} is empty or already registered")
    ANALYSES[cls.name] = cls
    return cls


def check_analysis_options(name: str, options: Any) -> None:
    """Raise a :class:`ConfigError` for unknown options of analysis ``name``."""
    if not isinstance(options, dict):
        raise ConfigError(f"[analyses.{name}] must be a table; received {options!r}.")
    known = ANALYSES[name].option_defaults
    for key in options:
        if key not in known:
            raise ConfigError(f"unknown option {key!r} in [analyses.{name}].{suggest(key, known)} "
                              f"Known options: {', '.join(sorted(known)) or 'none'}.")


def _layer_option(value: Any, where: str) -> list[str] | None:
    if value == "all":
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be \"all\" or a list of layer names; received {value!r}.")


@register_analysis
class DissimilarityAnalysis(StudyAnalysis):
    """Per-layer 1 - Pearson r between clean and adversarial activations (study S1)."""

    name = "dissimilarity"
    title = "Per-layer dissimilarity between clean and adversarial activations"
    option_defaults: ClassVar[dict[str, Any]] = {"layers": "all"}

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 **options: Any) -> None:
        super().__init__(model_name, model, class_names, **options)
        self._layers = _layer_option(self.options["layers"], "[analyses.dissimilarity].layers")
        self._reducers: dict[tuple[str, float], LayerDissimilarity] = {}

    def layers(self) -> list[str] | None:
        return self._layers

    def update(self, batch: AnalysisBatch) -> None:
        if batch.eps == 0:
            return
        key = (batch.attack, batch.eps)
        self._reducers.setdefault(key, LayerDissimilarity()).update(batch.clean.activations,
                                                                     batch.activations)

    def tables(self) -> dict[str, pd.DataFrame]:
        frames = []
        for (attack, eps), reducer in self._reducers.items():
            df = reducer.result()
            df.insert(0, "eps", eps)
            df.insert(0, "attack", attack)
            frames.append(df)
        return {"dissimilarity": pd.concat(frames, ignore_index=True)} if frames else {}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        from robustlens.analysis.plots import plot_layer_dissimilarity

        df = tables.get("dissimilarity")
        if df is None or df.empty:
            return []
        return [(f"Dissimilarity per layer under {attack}",
                 plot_layer_dissimilarity(df[df["attack"] == attack], hue="eps", panel="model"))
                for attack in df["attack"].unique()]

    def state_dict(self) -> dict[str, Any]:
        return {condition_str(k): r.state_dict() for k, r in self._reducers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reducers = {}
        for key, value in state.items():
            reducer = LayerDissimilarity()
            reducer.load_state_dict(value)
            self._reducers[condition_key(key)] = reducer

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, DissimilarityAnalysis)
        merge_keyed(self._reducers, other._reducers)


# sensitivity, rsa, manifolds, pca_images, dissimilarity_channels; per_class, per_example, audit
from robustlens.study import analyses_extra, analyses_robustness  # noqa: E402, F401
from robustlens.visualization import analyses as _visualization  # noqa: E402, F401  (featurevis, saliency)
