"""Helpers shared by study analyses: layer selection, per-condition reducers, table assembly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from robustlens.activations.layers import layers_for, resolve_layers, split_call
from robustlens.errors import ConfigError, RobustlensError
from robustlens.study.analyses.contract import (
    AnalysisBatch,
    Condition,
    StudyAnalysis,
    condition_key,
    condition_str,
    merge_keyed,
)

__all__ = ["LayerOption", "LayerSelect", "PerCondition", "concat_frames", "input_normalization_layers", "layer_list",
           "with_condition"]


def layer_list(selector: str | Sequence[str] | Mapping[str, Any], model_name: str | None = None) -> list[str] | None:
    """A validated layer option as the runner's ``layers()`` answer: ``"all"`` -> ``None``.

    Args:
        selector: ``"all"`` or a sequence of names / globs / ``"type:Name"`` selectors, or a
            table model name -> such selectors (``"*"`` for every model not named).
        model_name: the model the layers are for (needed for a per-model table).

    Raises:
        ConfigError: a per-model table has no entry for ``model_name`` and no ``"*"``.
    """
    if isinstance(selector, Mapping):
        try:
            chosen: Any = layers_for(selector, model_name or "")
        except RobustlensError as err:
            raise ConfigError(str(err)) from None
    else:
        chosen = selector
    return None if chosen == "all" else [chosen] if isinstance(chosen, str) else list(chosen)


def input_normalization_layers(model: nn.Module) -> set[str]:
    """Names of the modules that are ``model``'s input normalisation, not part of its architecture:
    a :class:`robustlens.models.Normalize`, or a module whose name ends in ``normalize``.

    Args:
        model: the model.
    """
    from robustlens.models import Normalize

    return {name for name, module in model.named_modules()
            if name and (isinstance(module, Normalize) or name.rsplit(".", 1)[-1].lower() == "normalize")}


class LayerSelect:
    """Picks one analysis' layers out of the runner's recording (which holds every analysis' layers).

    Args:
        model: the model (its module names resolve the selectors).
        layers: selectors (names, globs, ``"type:Name"``), or ``None`` for every leaf module.
        where: the option's name in messages (``"[analyses.rsa].layers"``).

    Raises:
        ConfigError: a selector matches no layer of ``model``.
    """

    def __init__(self, model: nn.Module, layers: list[str] | None, where: str) -> None:
        try:
            self.calls = resolve_layers(model, layers).calls
        except RobustlensError as err:
            raise ConfigError(f"{where}: {err}") from None

    def without(self, names: set[str]) -> LayerSelect:
        """Leave the modules ``names`` out of this selection (returns ``self``).

        Args:
            names: module names (e.g. :func:`input_normalization_layers`).
        """
        self.calls = {k: v for k, v in self.calls.items() if k not in names}
        return self

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of ``acts`` this selection covers, in ``acts``' order.

        Args:
            acts: recorded call name -> activation.
        """
        out = {}
        for name, value in acts.items():
            module, call = split_call(name)
            module = "" if module == "output" and "output" not in self.calls else module
            if module in self.calls:
                calls = self.calls[module]
                if calls is None or call in calls:
                    out[name] = value
        return out


def with_condition(df: pd.DataFrame, key: Condition) -> pd.DataFrame:
    """A copy of ``df`` with leading ``attack`` and ``eps`` columns.

    Args:
        df: a result table.
        key: the (attack, eps) condition.
    """
    df = df.copy()
    df.insert(0, "eps", key[1])
    df.insert(0, "attack", key[0])
    return df


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` with a fresh index; an empty DataFrame for no frames.

    Args:
        frames: the tables to stack.
    """
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class PerCondition(StudyAnalysis):
    """A study analysis keeping one set of named reducers per attack x eps.

    Subclasses implement :meth:`new_reducers`; the state dict, load and merge come from here
    (each reducer needs ``state_dict``, ``load_state_dict`` and ``merge``).

    Args:
        model_name: the model's label in the study.
        model: the model.
        class_names: names of the dataset's classes.
        options: the validated options.
        **raw: options as config keys (when ``options`` is None).
    """

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: Any = None, **raw: Any) -> None:
        super().__init__(model_name, model, class_names, options, **raw)
        self.reducers: dict[Condition, dict[str, Any]] = {}

    def new_reducers(self) -> dict[str, Any]:
        """A fresh set of named reducers for one condition."""
        raise NotImplementedError

    def reducers_for(self, batch: AnalysisBatch) -> dict[str, Any]:
        """The reducers of ``batch``'s condition (created on first use).

        Args:
            batch: an adversarial batch.
        """
        return self.reducers.setdefault((batch.attack, batch.eps), self.new_reducers())

    def state_dict(self) -> dict[str, Any]:
        return {condition_str(k): {n: r.state_dict() for n, r in red.items()}
                for k, red in self.reducers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reducers = {}
        for text, parts in state.items():
            reducers = self.new_reducers()
            for n, r in reducers.items():
                r.load_state_dict(parts[n])
            self.reducers[condition_key(text)] = reducers

    def merge(self, other: StudyAnalysis) -> None:
        assert isinstance(other, type(self))
        merge_keyed(self.reducers, other.reducers)


class LayerOption:
    """Mixin for analyses whose ``layers`` option names the layers they read.

    Call :meth:`use_layer_option` in ``__init__``; it sets ``_layers`` (what :meth:`layers` tells
    the runner to record) and ``_select`` (which picks them out of a recording, where other
    analyses may have recorded more). Put it before the base class: ``class A(LayerOption,
    PerCondition)``.
    """

    name: ClassVar[str]
    options: Any
    _layers: list[str] | None
    _select: LayerSelect

    def use_layer_option(self, model: nn.Module, model_name: str, *, rank_wrappers: bool = True) -> None:
        """Resolve ``self.options.layers`` for ``model``.

        Args:
            model: the model the layers belong to.
            model_name: its name in the study (for a per-model layer table).
            rank_wrappers: keep the input normalisation under ``"all"`` (False for analyses that
                rank layers or channels: the normalisation is a wrapper, not a layer).
        """
        self._layers = layer_list(self.options.layers, model_name)
        self._select = LayerSelect(model, self._layers, f"[analyses.{self.name}].layers")
        if not rank_wrappers and self._layers is None:
            self._select.without(input_normalization_layers(model))

    def layers(self) -> list[str] | None:
        """The layers to record: those of the ``layers`` option (``None``: every layer)."""
        return self._layers
