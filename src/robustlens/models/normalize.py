"""Per-channel input normalisation as a model's first layer.

Two ways to put it in front of a network:

- as a module of the model's own definition (robustlens' small CNNs, CORnet-S, the
  VOneNets: ``self.normalize = Normalize(...)`` called first in ``forward``);
- around an existing architecture, with :func:`normalize_input`: the network keeps its
  class (a subclass of it, in fact), its module names and its state-dict keys, and gains a
  first child ``normalize``. A torchvision ResNet so treated still names its layers
  ``layer4.0.relu`` and loads torchvision's weight files as they are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

__all__ = ["Normalize", "NormalizedInput", "normalize_input", "normalized_class"]

M = TypeVar("M", bound=nn.Module)


class Normalize(nn.Module):
    """Map pixels in [0, 1] to ``(x - mean) / std`` per channel.

    It holds its statistics as non-persistent buffers, so it adds no keys to a state dict
    and moves with the model between devices.

    Args:
        mean: one value per input channel.
        std: one value per input channel, all positive.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive; received {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedInput(nn.Module):
    """Mixin of the classes made by :func:`normalize_input`: normalise, then the network.

    ``forward(x)`` is the base class's ``forward(self.normalize(x))``.

    Attributes:
        layer_prefix_aliases: prefixes of former layer names that layer selection strips
            when a name is not found (robustlens once wrapped these networks as
            ``normalize -> model``, so their layers were called ``model.layer4``; see
            :func:`robustlens.activations.resolve_layers`).
    """

    normalize: Normalize
    layer_prefix_aliases: ClassVar[tuple[str, ...]] = ("model.",)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return super().forward(self.normalize(x), *args, **kwargs)


_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def normalized_class(base: type[nn.Module]) -> type[nn.Module]:
    """The subclass of ``base`` that :func:`normalize_input` gives a model of class ``base``.

    Made once per class and kept in this module under its name (``NormalizedResNet``), so
    that pickled models find it once it has been made again (robustlens makes those of its
    registered architectures on import).

    Args:
        base: an ``nn.Module`` subclass.
    """
    if issubclass(base, NormalizedInput):
        return base
    cls = _CLASSES.get(base)
    if cls is None:
        name = f"Normalized{base.__name__}"
        cls = type(name, (NormalizedInput, base), {
            "__module__": __name__, "__qualname__": name,
            "__doc__": f"{base.__module__}.{base.__qualname__} with input normalisation first.",
        })
        _CLASSES[base] = cls
        setattr(sys.modules[__name__], name, cls)  # so that pickle finds the class by name
    return cls


def normalize_input(model: M, mean: Sequence[float], std: Sequence[float]) -> M:
    """Make ``model`` take pixels in [0, 1] by normalising them first (in place).

    The model's class becomes a subclass of its own (``NormalizedResNet`` for a torchvision
    ``ResNet``: ``isinstance`` checks still hold) whose ``forward`` applies
    :class:`Normalize` first; the normaliser is the first child, named ``normalize``. Every
    other module name and every state-dict key stay the architecture's own.

    Args:
        model: any module taking normalised images.
        mean: one value per input channel.
        std: one value per input channel, all positive.

    Returns:
        ``model`` itself.
    """
    if isinstance(model, NormalizedInput):
        raise ValueError(f"{type(model).__name__} already normalises its input")
    if "normalize" in model._modules:
        raise ValueError(f"{type(model).__name__} already has a child named 'normalize'")
    norm = Normalize(mean, std)
    model.__class__ = normalized_class(type(model))  # type: ignore[assignment]
    children = list(model._modules.items())
    model._modules.clear()  # ``normalize`` first, so that definition order is call order
    model._modules["normalize"] = norm
    model._modules.update(children)
    return model
