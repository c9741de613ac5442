"""The model registry: models by name, each with a frozen metadata record.

Constructors are registered with :func:`register_model` and built with
:func:`create_model`. Every registered model takes float images in [0, 1] shaped
(B, C, H, W) and returns logits; input normalisation is its own first module.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from robustlens.errors import ConfigError, suggest

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered model.

    Attributes:
        name: registry name.
        input_size: (C, H, W) of the images the model expects.
        num_classes: number of logits.
        mean: per-channel normalisation mean, applied by the model's first layer.
        std: per-channel normalisation standard deviation.
        dataset: what the architecture is meant for (``"fashion_mnist"``, ``"imagenet"``, ...).
        description: one line for ``robustlens models``.
        paper: reference, when there is one.
        license: license of the architecture / weights.
        pixel_bounds: the range of input pixels; always (0, 1).
    """

    name: str
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    description: str
    paper: str = ""
    license: str = "MIT"
    pixel_bounds: tuple[float, float] = (0.0, 1.0)
    stochastic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    constructor: Callable[..., nn.Module]
    defaults: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(info: ModelInfo) -> Callable[[F], F]:
    """Decorator registering a model constructor under ``info.name``.

    The constructor's keyword arguments (with their defaults) are the overrides that
    :func:`create_model` accepts.
    """

    def decorate(constructor: F) -> F:
        if info.name in _REGISTRY:
            raise ValueError(f"model {info.name!r} is registered twice")
        signature = inspect.signature(constructor)
        defaults = {
            k: p.default
            for k, p in signature.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        _REGISTRY[info.name] = _Entry(info, constructor, defaults)
        return constructor

    return decorate


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}.{suggest(name, _REGISTRY)} "
            "Run `robustlens models` to list the registered models."
        )
    return _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name (see :func:`list_models`).
        **overrides: constructor options; unknown keys are an error listing the accepted ones.

    Returns:
        An ``nn.Module`` taking (B, C, H, W) pixels in [0, 1] and returning (B, K) logits.
    """
    entry = _entry(name)
    unknown = sorted(set(overrides) - set(entry.defaults))
    if unknown:
        accepted = ", ".join(sorted(entry.defaults)) or "none"
        raise ConfigError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted options: {accepted}."
        )
    return entry.constructor(**overrides)


def model_info(name: str) -> ModelInfo:
    """Return the metadata record of a registered model."""
    return _entry(name).info


def model_defaults(name: str) -> dict[str, Any]:
    """Return the constructor options of a registered model with their defaults."""
    return dict(_entry(name).defaults)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
