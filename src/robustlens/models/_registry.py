"""The model registry: models by name, each with a frozen metadata record.

Constructors are registered with :func:`register_model` and built with
:func:`create_model`. Every registered model takes float images in [0, 1] shaped
(B, C, H, W) and returns logits; input normalisation is its own first module.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from robustlens.errors import CheckpointError, ConfigError, suggest

__all__ = ["LOADING_OPTIONS", "ModelInfo", "WeightsLoader", "architecture_options", "create_model", "list_models",
           "load_state_dict_file", "model_defaults", "model_info", "pretrained_weights_path", "register_model",
           "upgrade_state_dict"]


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


WeightsLoader = Callable[..., nn.Module]
"""``loader(path, build, options, *, allow_pickle) -> model``: a family's released-weights loader.

``build(**options)`` builds the architecture (under the seed ``create_model`` was given);
the loader reads ``path`` (safely unless ``allow_pickle``), builds the model the file
describes and returns it with the file's weights, in eval mode.
"""

LOADING_OPTIONS: dict[str, Any] = {"weights": None, "allow_pickle": False, "seed": None}
"""Options every registered model accepts, with their defaults (see :func:`create_model`)."""


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    constructor: Callable[..., nn.Module]
    defaults: dict[str, Any]
    loader: WeightsLoader
    pretrained_path: Callable[[], Path] | None


_REGISTRY: dict[str, _Entry] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def load_state_dict_file(path: str | Path, build: Callable[..., nn.Module], options: dict[str, Any],
                         *, allow_pickle: bool = False) -> nn.Module:
    """The default weights loader: a state dict for the architecture as robustlens builds it.

    Reads a robustlens checkpoint (``.safetensors``), or a ``torch.save``d state dict (bare,
    under ``state_dict`` / ``model``, with or without DataParallel's ``module.`` prefix).
    Missing ``num_batches_tracked`` entries (old PyTorch) are filled with 0; keys and shapes
    must otherwise match exactly.

    Args:
        path: the weights file.
        build: the registered constructor.
        options: its options.
        allow_pickle: accept files holding arbitrary Python objects (only ones you trust).

    Returns:
        The model with the file's weights, in eval mode.
    """
    from robustlens.models._weights import check_weights_file, extract_state_dict, read_weights_file, strip_prefix
    from robustlens.models.checkpoint import load_state_dict_checked

    check_weights_file(path)  # a bad path fails before anything is built
    model = build(**options)
    source = f"weights file {path}"
    state = strip_prefix(extract_state_dict(read_weights_file(path, allow_pickle=allow_pickle), source))
    state = upgrade_state_dict(model, state)
    load_state_dict_checked(model, state, source)
    return model.eval()


def upgrade_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapt a state dict written by an older robustlens (or old PyTorch) to ``model``.

    Strips a ``model.`` prefix that every key carries when ``model`` has no ``model`` child
    (robustlens once wrapped torchvision networks as ``normalize -> model``), and fills
    missing batch-norm ``num_batches_tracked`` counters with 0.

    Args:
        model: the model the state dict is for.
        state: name -> tensor.

    Returns:
        The adapted state dict (a new dict; tensors are shared).
    """
    expected = model.state_dict()
    if "model" not in model._modules and state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state


def register_model(info: ModelInfo, *, weights_loader: WeightsLoader | None = None,
                   pretrained_path: Callable[[], Path] | None = None) -> Callable[[F], F]:
    """Decorator registering a model constructor under ``info.name``.

    The constructor's keyword arguments (with their defaults) are the overrides that
    :func:`create_model` accepts, besides ``weights``, ``allow_pickle`` and ``seed``, which
    every model accepts.

    Args:
        info: the model's metadata.
        weights_loader: the family's loader of released weights files (default
            :func:`load_state_dict_file`: a state dict of the model as built).
        pretrained_path: for models whose constructor loads weights shipped by a package
            (``pretrained=True``), a function returning that file's path.
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
        clash = sorted(set(defaults) & set(LOADING_OPTIONS))
        if clash:
            raise ValueError(f"model {info.name!r}: the registry provides {clash}; drop them from "
                             "the constructor")
        _REGISTRY[info.name] = _Entry(info, constructor, defaults, weights_loader or load_state_dict_file,
                                      pretrained_path)
        return constructor

    return decorate


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}.{suggest(name, _REGISTRY)} "
            "Run `robustlens models` to list the registered models."
        )
    return _REGISTRY[name]


def create_model(name: str, *, weights: str | Path | None = None, allow_pickle: bool = False,
                 seed: int | None = None, **overrides: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name (see :func:`list_models`).
        weights: a local weights file: the family's released format (torchvision ``.pth``
            state dicts, the VOneNet and CORnet releases) or a robustlens checkpoint
            (``.safetensors``; the options recorded beside it are the defaults of
            ``overrides``). The model comes back in eval mode. Nothing is downloaded.
        allow_pickle: let ``weights`` be a full pickle (files holding Python objects besides
            tensors); only for files you trust.
        seed: seed of the initial weights (the global RNG is left as it was); ``None``
            draws them from the global RNG. Fixed parts keep their own seeds (a VOneBlock's
            ``gabor_seed`` and ``color_seed``).
        **overrides: constructor options; unknown keys are an error listing the accepted ones.

    Returns:
        An ``nn.Module`` taking (B, C, H, W) pixels in [0, 1] and returning (B, K) logits;
        its :class:`ModelInfo` is kept as the attribute ``robustlens_info``.

    Raises:
        ConfigError: an unknown name or option.
        CheckpointError: a missing, corrupt, unsafe or mismatching weights file.
    """
    entry = _entry(name)
    unknown = sorted(set(overrides) - set(entry.defaults))
    if unknown:
        accepted = ", ".join(sorted({*entry.defaults, *LOADING_OPTIONS}))
        raise ConfigError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"accepted options: {accepted}."
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer or None; received {seed!r}.")
    if allow_pickle and weights is None:
        raise ConfigError(f"model {name!r}: allow_pickle applies to a weights file; pass weights=PATH "
                          "as well, or drop allow_pickle.")
    with torch.random.fork_rng(devices=[]) if seed is not None else nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        if weights is None:
            model = entry.constructor(**overrides)
        else:
            path = Path(weights).expanduser()
            model = entry.loader(path, entry.constructor, {**_checkpoint_options(name, path), **overrides},
                                 allow_pickle=allow_pickle)
    object.__setattr__(model, "robustlens_info", entry.info)  # read by the input checks
    return model


def _checkpoint_options(name: str, path: Path) -> dict[str, Any]:
    """The options recorded beside a robustlens checkpoint of ``name`` (``{}`` for other files)."""
    from robustlens.models.checkpoint import checkpoint_paths, read_metadata

    if path.suffix != ".safetensors" or not checkpoint_paths(path)[1].is_file():
        return {}
    record = read_metadata(path)
    if record["architecture"] != name:
        raise CheckpointError(f"checkpoint {path} holds a {record['architecture']!r}, not a {name!r}; "
                              f"use create_model({record['architecture']!r}, weights=...) or load_checkpoint().")
    return dict(record.get("options", {}))


def model_info(name: str) -> ModelInfo:
    """Return the metadata record of a registered model.

    Args:
        name: registry name.
    """
    return _entry(name).info


def model_defaults(name: str) -> dict[str, Any]:
    """The options :func:`create_model` accepts for ``name``, with their defaults.

    The constructor's options, then ``weights``, ``allow_pickle`` and ``seed``.

    Args:
        name: registry name.
    """
    return {**_entry(name).defaults, **LOADING_OPTIONS}


def architecture_options(name: str) -> dict[str, Any]:
    """The constructor options of ``name`` (without the loading options), with their defaults.

    Args:
        name: registry name.
    """
    return dict(_entry(name).defaults)


def pretrained_weights_path(name: str) -> Path | None:
    """Path of the weights a package ships for ``name`` (``pretrained=True``), else ``None``.

    Args:
        name: registry name.

    Raises:
        CheckpointError: the model has packaged weights but their package is not installed.
    """
    get = _entry(name).pretrained_path
    return None if get is None else get()


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style ``pattern``.

    Args:
        pattern: ``fnmatch`` pattern, e.g. ``"vone_*"``.
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
