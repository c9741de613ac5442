"""The contract between a study analysis and the study runner.

Everything an analysis (built-in or third-party) needs lives here: the batches it is fed
(:class:`CleanBatch`, :class:`AnalysisBatch`), the base classes (:class:`StudyAnalysis` for
per-model analyses, :class:`ModelComparison` for analyses that compare models), typed options
(:class:`AnalysisOptions` and the checks of :func:`option`), the registries and their
decorators, and the (attack, eps) condition codec used in state-dict keys. Adding an analysis
never edits this module; see :mod:`robustlens.study.analyses` for how to add one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.attacks import Attack, AttackResult
from robustlens.errors import ConfigError, suggest

__all__ = [
    "ANALYSES",
    "COMPARISONS",
    "AnalysisBatch",
    "AnalysisOptions",
    "CleanBatch",
    "ComparisonOptions",
    "Condition",
    "ModelComparison",
    "StudyAnalysis",
    "choice",
    "condition_key",
    "condition_str",
    "count",
    "layer_selector",
    "merge_keyed",
    "number",
    "option",
    "parse_options",
    "register_analysis",
    "register_comparison",
    "strings",
]

Condition = tuple[str, float]
"""(attack label, eps); ``("clean", 0.0)`` for clean images."""


def condition_str(key: Condition) -> str:
    """``("pgd", 0.1)`` -> ``"pgd@0.1"``: a condition as a state-dict key (eps round-trips exactly).

    Args:
        key: the (attack label, eps) condition.
    """
    return f"{key[0]}@{key[1]!r}"


def condition_key(text: str) -> Condition:
    """The inverse of :func:`condition_str`.

    Args:
        text: a key written by :func:`condition_str`.
    """
    attack, _, eps = text.rpartition("@")
    return attack, float(eps)


def merge_keyed(mine: dict[Any, Any], theirs: dict[Any, Any]) -> None:
    """Merge dicts of reducers (or of dicts of reducers) key by key; keys only in ``theirs`` are taken.

    Args:
        mine: the reducers merged into (changed in place).
        theirs: the reducers of another worker (same keys' reducers must have a ``merge``).
    """
    for key, value in theirs.items():
        if key not in mine:
            mine[key] = value
        elif isinstance(value, dict):
            merge_keyed(mine[key], value)
        else:
            mine[key].merge(value)


# ----------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class CleanBatch:
    """One batch of clean data seen by a model.

    Batches arrive in data order on one worker; with several workers (or a resumed run) each
    worker sees every ``world_size``-th batch, so use ``index`` / ``offset`` rather than
    counting batches.

    Attributes:
        images: (B, C, H, W) pixels in [0, 1].
        labels: (B,) true classes.
        logits: (B, K) the model's outputs.
        activations: recorded layer name -> (B, ...) activation (empty if nothing recorded);
            it may hold layers other analyses asked for: select yours with
            :class:`~robustlens.study.analyses.helpers.LayerSelect`.
        index: the batch's position in the study's data order (0 is the first batch).
        offset: the position of the batch's first image in the study's data order.
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
        method: the attack object itself (``None`` when not known), e.g. to tell a
            black-box attack from a white-box one or read a cascade's stages.
    """

    attack: str
    eps: float
    clean: CleanBatch
    images: torch.Tensor
    logits: torch.Tensor
    activations: Mapping[str, torch.Tensor]
    norm: str = "inf"
    result: AttackResult | None = None
    method: Attack | None = None


# ----------------------------------------------------------------------------------- options

Check = Callable[[Any, str], Any]
"""An option check: ``(value, where) -> normalized value``, raising :class:`ConfigError`."""


def option(default: Any, check: Check | None = None) -> Any:
    """A typed option field of an :class:`AnalysisOptions` dataclass.

    Args:
        default: the value when the config leaves the key out (not checked; immutable:
            a tuple, not a list).
        check: validates and normalizes a value given in the config (``None``: any value).
    """
    return dataclasses.field(default=default, metadata={"check": check})


def count(minimum: int = 0) -> Check:
    """A check for an integer >= ``minimum`` (booleans refused).

    Args:
        minimum: the smallest value allowed.
    """
    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{where} must be an integer >= {minimum}; received {value!r}.")
        return value
    return check


def number(low: float = float("-inf"), high: float = float("inf"), *, open_low: bool = False,
           open_high: bool = False, hint: str = "") -> Check:
    """A check for a real number in a range (integers accepted, booleans refused).

    Args:
        low: the lower bound.
        high: the upper bound.
        open_low: exclude ``low`` itself.
        open_high: exclude ``high`` itself.
        hint: text appended to the error (what the number means).
    """
    def check(value: Any, where: str) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
        if not ok:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            raise ConfigError(f"{where} must be a number in {left}{low:g}, {high:g}{right}{hint}; "
                              f"received {value!r}.")
        return float(value)
    return check


def choice(*choices: str) -> Check:
    """A check for one string out of ``choices``.

    Args:
        *choices: the strings allowed.
    """
    def check(value: Any, where: str) -> str:
        if value not in choices:
            hint = suggest(value, choices) if isinstance(value, str) else ""
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}; "
                              f"received {value!r}.{hint}")
        return str(value)
    return check


def strings(*choices: str) -> Check:
    """A check for a non-empty list of strings out of ``choices`` (a single string is a list of one).

    Args:
        *choices: the strings allowed.
    """
    def check(value: Any, where: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items or any(v not in choices for v in items):
            raise ConfigError(f"{where} must be a list of {', '.join(map(repr, choices))}; "
                              f"received {value!r}.")
        return tuple(items)
    return check


def layer_selector(*, allow_penultimate: bool = False) -> Check:
    """A check for layer selectors: ``"all"``, a name, a glob (``"layer*.relu"``), ``"type:ReLU"``,
    or a non-empty list of them. Normalized to ``"all"`` or a tuple of selectors.

    Args:
        allow_penultimate: accept ``"penultimate"`` (the layer before the classifier).
    """
    def one(value: Any, where: str) -> str | tuple[str, ...] | None:
        if value == "all" or (allow_penultimate and value == "penultimate"):
            return str(value)
        if isinstance(value, str) and value:
            return (value,)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        return None

    def check(value: Any, where: str) -> Any:
        extra = ', "penultimate"' if allow_penultimate else ""
        if isinstance(value, Mapping) and value:  # one entry per model ("*": every other model)
            table = {}
            for model, selectors in value.items():
                parsed = one(selectors, where)
                if parsed is None:
                    raise ConfigError(f"{where}.{model} must be \"all\"{extra}, a layer name, glob or "
                                      f"\"type:Name\", or a list of them; received {selectors!r}.")
                table[str(model)] = parsed
            return table
        parsed = one(value, where)
        if parsed is None:
            raise ConfigError(f"{where} must be \"all\"{extra}, a layer name, glob (\"layer*.relu\") or "
                              f"\"type:Name\", a list of them, or a table of them per model "
                              f"({{ resnet50 = [...], \"*\" = [...] }}); received {value!r}.")
        return parsed
    return check


@dataclass(frozen=True)
class AnalysisOptions:
    """Base of an analysis' typed options: subclass it as a frozen dataclass whose fields are
    the TOML keys, each declared with :func:`option` (default and check)."""


@dataclass(frozen=True)
class ComparisonOptions(AnalysisOptions):
    """Options every model comparison has.

    Attributes:
        models: the study models to compare (empty: all of them, in config order).
    """

    models: tuple[str, ...] = option((), lambda v, w: _model_names(v, w))


def _model_names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of model names; received {value!r}.")
    return tuple(value)


OptionsT = TypeVar("OptionsT", bound=AnalysisOptions)


def parse_options(schema: type[OptionsT], table: Any, where: str) -> OptionsT:
    """Validate a config table against an options dataclass.

    Args:
        schema: the :class:`AnalysisOptions` subclass.
        table: the TOML table (a dict).
        where: the table's name in messages (``"[analyses.rsa]"``).

    Raises:
        ConfigError: not a table, an unknown key (with the closest known one), or a value its
            check refuses; the message names ``where.key``, what was expected and received.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table; received {table!r}.")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} in {where}.{suggest(key, fields)} "
                              f"Known options: {', '.join(sorted(fields)) or 'none'}.")
        check = fields[key].metadata.get("check")
        values[key] = check(value, f"{where}.{key}") if check is not None else value
    return schema(**values)


# ----------------------------------------------------------------------------- base classes


def _doc_text(cls: type) -> str:
    """The first paragraph of a class' docstring, on one line."""
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


class StudyAnalysis:
    """Base class of per-model study analyses (the contract is in :mod:`robustlens.study.analyses`).

    Args:
        model_name: the model's label in the study.
        model: the model (in eval mode; do not change it).
        class_names: names of the dataset's classes.
        options: the validated options (an instance of ``Options``); ``None``: parse ``raw``.
        **raw: options as config keys, validated against ``Options`` (when ``options`` is None).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    report_text: ClassVar[str] = ""
    """The report section's text (HTML allowed): what the figures show and how to read them.
    Empty: the first paragraph of the class docstring (see :meth:`describe`)."""
    Options: ClassVar[type[AnalysisOptions]] = AnalysisOptions
    option_defaults: ClassVar[dict[str, Any]] = {}  # derived from Options by register_analysis

    def __init__(self, model_name: str, model: nn.Module, class_names: Sequence[str],
                 options: AnalysisOptions | None = None, **raw: Any) -> None:
        self.model_name = model_name
        self.model = model
        self.class_names = tuple(class_names)
        if options is None:
            options = parse_options(self.Options, raw, f"[analyses.{self.name}]")
        elif raw:
            raise TypeError("give either options or raw option keys, not both")
        self.options: Any = options

    @classmethod
    def describe(cls) -> str:
        """The report section's text: :attr:`report_text`, else the docstring's first paragraph."""
        return cls.report_text or _doc_text(cls)

    def layers(self) -> list[str] | None:
        """Layers to record: names or selectors, ``None`` for every leaf module, ``[]`` for none."""
        return []

    def update_clean(self, batch: CleanBatch) -> None:
        """Add a clean batch (default: nothing).

        Args:
            batch: the clean batch.
        """

    def update(self, batch: AnalysisBatch) -> None:
        """Add an adversarial batch (default: nothing).

        Args:
            batch: the batch under one attack at one eps.
        """

    def tables(self) -> dict[str, pd.DataFrame]:
        """Named result tables (without the ``model`` column)."""
        return {}

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        """Titled figures drawn from the tables of every model (with a ``model`` column).

        Args:
            tables: this analysis' tables, every model concatenated.
        """
        return []

    def state_dict(self) -> dict[str, Any]:
        """The running sums (tensors and plain containers)."""
        raise NotImplementedError(f"analysis {self.name!r} does not implement state_dict(), so a run "
                                  "using it cannot be resumed or distributed")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s sums.

        Args:
            state: what :meth:`state_dict` returned (possibly after a save and load).
        """
        raise NotImplementedError(f"analysis {self.name!r} does not implement load_state_dict()")

    def merge(self, other: StudyAnalysis) -> None:
        """Add ``other``'s sums (same analysis, same model, other batches) to this one.

        Args:
            other: an instance of the same class, fed other batches.
        """
        raise NotImplementedError(f"analysis {self.name!r} does not implement merge(), so it cannot run "
                                  "under torchrun with several processes")


class ModelComparison:
    """Base class of analyses that compare models, run once after every per-model analysis.

    Enabled by a ``[comparisons.NAME]`` table; its ``models`` key picks the study models to
    compare (all by default). :meth:`compare` gets every per-model table of the study,
    concatenated over models (each with its ``model`` column, ``accuracy`` included) and
    restricted to the chosen models, and returns new named tables; the runner saves them
    like any other (``results/<table>.parquet``), and :meth:`figures` draws them.

    Args:
        options: the validated options (an instance of ``Options``); ``None``: parse ``raw``.
        **raw: options as config keys, validated against ``Options`` (when ``options`` is None).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    report_text: ClassVar[str] = ""
    """The report section's text (HTML allowed); empty: the docstring's first paragraph."""
    Options: ClassVar[type[ComparisonOptions]] = ComparisonOptions

    def __init__(self, options: ComparisonOptions | None = None, **raw: Any) -> None:
        if options is None:
            options = parse_options(self.Options, raw, f"[comparisons.{self.name}]")
        self.options: Any = options

    @classmethod
    def describe(cls) -> str:
        """The report section's text: :attr:`report_text`, else the docstring's first paragraph."""
        return cls.report_text or _doc_text(cls)

    def compare(self, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """Named result tables computed from the study's tables.

        Args:
            tables: table name -> every chosen model's rows (``model`` column first).
        """
        raise NotImplementedError(f"comparison {self.name!r} does not implement compare()")

    @classmethod
    def figures(cls, tables: dict[str, pd.DataFrame]) -> list[tuple[str, Figure]]:
        """Titled figures drawn from :meth:`compare`'s tables.

        Args:
            tables: the tables :meth:`compare` returned.
        """
        return []


# ----------------------------------------------------------------------------------- registries

ANALYSES: dict[str, type[StudyAnalysis]] = {}
"""Registered per-model analyses by name (built-ins, then entry points once loaded)."""

COMPARISONS: dict[str, type[ModelComparison]] = {}
"""Registered model comparisons by name."""

A = TypeVar("A", bound=type[StudyAnalysis])
C = TypeVar("C", bound=type[ModelComparison])


def _check_new(cls: type, registry: Mapping[str, type]) -> None:
    name = getattr(cls, "name", "")
    if not name or name in ANALYSES or name in COMPARISONS:
        raise ValueError(f"analysis name {name!r} is empty or already registered")
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)
            and issubclass(options, AnalysisOptions)):
        raise TypeError(f"{cls.__name__}.Options must be a dataclass subclassing AnalysisOptions")


def register_analysis(cls: A) -> A:
    """Class decorator adding a per-model study analysis under ``cls.name``.

    Args:
        cls: a :class:`StudyAnalysis` subclass with ``name`` and ``Options`` set.
    """
    _check_new(cls, ANALYSES)
    cls.option_defaults = {f.name: f.default for f in dataclasses.fields(cls.Options)}
    ANALYSES[cls.name] = cls
    return cls


def register_comparison(cls: C) -> C:
    """Class decorator adding a model comparison under ``cls.name``.

    Args:
        cls: a :class:`ModelComparison` subclass with ``name`` and ``Options`` set.
    """
    _check_new(cls, COMPARISONS)
    if not issubclass(cls.Options, ComparisonOptions):
        raise TypeError(f"{cls.__name__}.Options must subclass ComparisonOptions")
    COMPARISONS[cls.name] = cls
    return cls
