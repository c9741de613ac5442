"""Objectives for feature visualization: small objects that add, subtract and scale.

An :class:`Objective` maps the recorded activations of one forward pass to a (B,) tensor,
one value per image, to be *maximised*. It names the layer calls it reads (``layers``), so
:func:`~.render.render` records only those (and stops the forward pass after them when the
logits are not needed). Objectives combine: ``channel("conv2#3") - 0.5 * channel("conv2#7")``,
``obj / 2``, ``-obj``, ``sum([...])``.

Addressing: a channel is ``"layer#C"`` (robustlens; ``"layer1.0.relu:2#5"`` is channel 5 of
the third call of ``layer1.0.relu``) or Lucent's ``"layer:C"`` (channel C of the module's
first call). Text with ``#`` is always read the robustlens way. The model's logits are the
call ``"output"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlens.activations.layers import ChannelRef, from_lucent
from robustlens.errors import RobustlensError

__all__ = ["Objective", "as_objective", "channel", "class_logit", "deepdream", "direction",
           "diversity", "layer", "neuron", "parse_unit"]

Activations = Mapping[str, torch.Tensor]
OUTPUT = "output"


@dataclass(frozen=True)
class Objective:
    """A quantity to maximise: (recorded activations) -> (B,) values, one per image.

    Attributes:
        fn: the function of the activations (call name -> (B, ...) tensor).
        layers: the call names it reads (``"output"`` for the logits).
        description: human-readable text, also used in figure titles.
    """

    fn: Callable[[Activations], torch.Tensor]
    layers: frozenset[str]
    description: str

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.fn(activations)

    @property
    def needs_output(self) -> bool:
        """Whether the logits (the whole forward pass) are needed."""
        return OUTPUT in self.layers

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(lambda a: self(a) + other(a), self.layers | other.layers,
                             f"{self.description} + {other.description}")
        return Objective(lambda a: self(a) + float(other), self.layers,
                         f"{self.description} + {float(other):g}")

    def __radd__(self, other: float) -> Objective:  # sum([...]) starts from 0
        return self if other == 0 else self + other

    def __neg__(self) -> Objective:
        return Objective(lambda a: -self(a), self.layers, f"-({self.description})")

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, factor: float) -> Objective:
        if isinstance(factor, Objective):
            raise RobustlensError("objectives can be scaled by numbers, not multiplied together.")
        f = float(factor)
        return Objective(lambda a: f * self(a), self.layers, f"{f:g} * ({self.description})")

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        return self * (1.0 / float(divisor))

    def __str__(self) -> str:
        return self.description


def parse_unit(address: str | ChannelRef) -> ChannelRef:
    """Read ``"layer#C"`` or Lucent's ``"layer:C"`` as a :class:`ChannelRef`."""
    if isinstance(address, ChannelRef):
        return address
    if not isinstance(address, str):
        raise RobustlensError(f"a channel address must be text like 'layer#3' or 'layer:3'; "
                              f"received {address!r}.")
    return from_lucent(address)


def _get(acts: Activations, name: str) -> torch.Tensor:
    try:
        return acts[name]
    except KeyError:
        raise RobustlensError(f"{name!r} was not recorded; recorded: {sorted(acts)}.") from None


def _channel_of(acts: Activations, ref: ChannelRef) -> torch.Tensor:
    return ref.select(_get(acts, ref.layer))


def channel(address: str | ChannelRef) -> Objective:
    """Mean activation of a channel over its positions (a (B, C) unit is its value)."""
    ref = parse_unit(address)

    def fn(acts: Activations) -> torch.Tensor:
        x = _channel_of(acts, ref)
        return x.reshape(x.shape[0], -1).mean(1)

    return Objective(fn, frozenset({ref.layer}), f"channel {ref}")


def neuron(address: str | ChannelRef, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of a channel at one position (default: the centre of the map).

    Args:
        address: the channel.
        y: row in the activation map, in map positions (not pixels).
        x: column in the activation map, in map positions (not pixels).
    """
    ref = parse_unit(address)

    def fn(acts: Activations) -> torch.Tensor:
        a = _channel_of(acts, ref)
        if a.ndim == 1:
            return a
        if a.ndim != 3:
            raise RobustlensError(f"neuron() needs a (B, C, H, W) map at {ref.layer!r}; "
                                  f"received shape {tuple(a.shape)}.")
        h, w = a.shape[1:]
        yy, xx = h // 2 if y is None else y, w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise RobustlensError(f"position ({yy}, {xx}) is outside the {h} x {w} map of "
                                  f"{ref.layer!r}.")
        return a[:, yy, xx]

    where = "centre" if y is None and x is None else f"({y}, {x})"
    return Objective(fn, frozenset({ref.layer}), f"neuron {ref} at {where}")


def layer(name: str) -> Objective:
    """Mean squared activation of a whole layer (DeepDream's objective)."""

    def fn(acts: Activations) -> torch.Tensor:
        a = _get(acts, name)
        return a.reshape(a.shape[0], -1).pow(2).mean(1)

    return Objective(fn, frozenset({name}), f"layer {name} (mean square)")


deepdream = layer


def class_logit(index: int) -> Objective:
    """The logit of class ``index``."""

    def fn(acts: Activations) -> torch.Tensor:
        logits = _get(acts, OUTPUT)
        if not 0 <= index < logits.shape[-1]:
            raise RobustlensError(f"class {index} is out of range for {logits.shape[-1]} logits.")
        return logits[:, index]

    return Objective(fn, frozenset({OUTPUT}), f"logit {index}")


def direction(name: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Projection of a layer's channel vectors on a direction, averaged over positions.

    Args:
        name: the layer call.
        vector: (C,) the direction in channel space (normalised to unit length).
    """
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()
    if v.numel() == 0 or float(v.norm()) == 0:
        raise RobustlensError("the direction must be a non-zero vector.")
    v = v / v.norm()

    def fn(acts: Activations) -> torch.Tensor:
        a = _get(acts, name)
        if a.shape[1] != v.numel():
            raise RobustlensError(f"the direction has {v.numel()} values but {name!r} has "
                                  f"{a.shape[1]} channels.")
        proj = torch.einsum("bc...,c->b...", a, v.to(a))
        return proj.reshape(a.shape[0], -1).mean(1)

    return Objective(fn, frozenset({name}), f"direction in {name}")


def diversity(name: str) -> Objective:
    """Minus each image's mean cosine similarity of Gram matrices to the other images.

    Added to another objective (``channel(...) + 0.1 * diversity(...)``) over a batch, it
    pushes the images of the batch to show different styles of the same feature
    (Olah et al. 2017). Zero for a batch of one.
    """

    def fn(acts: Activations) -> torch.Tensor:
        a = _get(acts, name)
        b = a.shape[0]
        if b < 2:
            return a.new_zeros(b)
        flat = a.reshape(b, a.shape[1], -1)
        gram = torch.einsum("bcp,bdp->bcd", flat, flat) / flat.shape[-1]
        g = F.normalize(gram.reshape(b, -1), dim=1)
        sim = g @ g.T
        return -(sim.sum(1) - sim.diagonal()) / (b - 1)

    return Objective(fn, frozenset({name}), f"diversity of {name}")


def as_objective(objective: Objective | str | ChannelRef) -> Objective:
    """An objective from an address (``"layer#C"`` or ``"layer:C"``: :func:`channel`)."""
    if isinstance(objective, Objective):
        return objective
    return channel(objective)
