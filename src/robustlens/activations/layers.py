"""Naming layers, calls and channels, and selecting the layers to record.

Three kinds of address are used across robustlens, each with its own separator so that no
string can mean two things:

- a **module** is named by its path in ``model.named_modules()`` (``"layer1.0.relu"``); the
  model itself is ``"output"``;
- a **call** of a module is the module name plus ``":N"`` for its N-th call in one forward
  pass (``"layer1.0.relu:1"``; no suffix is call 0). Recorded activations are keyed by call;
- a **channel** of a recorded call is the call name plus ``"#C"`` (``"layer4.2.relu:2#17"``,
  channel 17 of the third call of ``layer4.2.relu``), parsed by :func:`parse_channel` into a
  :class:`ChannelRef`. Channel C is index C along dimension 1 of the (B, C, ...) activation.

Lucent writes channels as ``"layer:channel"``; that text means a *call* here, so it is only
read by :func:`from_lucent`, for code that takes Lucent-style objectives.

Lucent writes channels as ``"layer:channel"``. In a *unit address* (the objectives of feature
visualization, ``render``, ``robustlens visualize render``) that text is read Lucent's way,
by :func:`from_lucent`: ``"layer4:0"`` is channel 0 of ``layer4``'s (first call's) output,
while ``"layer4:1#0"`` is channel 0 of its second call. In a *layer selector* (recording,
study configs) ``":N"`` is always the N-th call.

Layers to record are selected (:func:`resolve_layers`) by exact name (optionally with a call
suffix), by glob pattern (``fnmatch``: ``"layer*.relu"``, ``"features.?"``), or by module type,
given as a class (``nn.ReLU``, subclasses included) or, in config files, as the string
``"type:ReLU"`` (any class of that name in the module's class hierarchy).

Names are the architecture's own: torchvision's ``layer4.0.relu`` for a registered ResNet,
the released code's ``model.layer4.0.relu`` for a VOneResNet50 (whose back-end is its
``model``). A model may list former name prefixes in a ``layer_prefix_aliases`` attribute
(robustlens' normalised torchvision models list ``"model."``, the prefix their layers had
when robustlens wrapped them as ``normalize -> model``); a name that is not found is then
tried without such a prefix, so ``"model.layer4.0.relu"`` still selects ``layer4.0.relu``.
Recordings are keyed by the architecture's names and also answer to the former ones.

A study naming layers for models with different names gives either a selector that matches
in each (a glob such as ``"*layer1.0.relu:2"``), or one list per model:
``{"resnet50": ["layer1.0.relu:2"], "vone": ["model.layer1.0.relu:2"]}`` (keyed by the model's
name in the study, ``"*"`` for the others), resolved by :func:`layers_for`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from robustlens.errors import RobustlensError, suggest

__all__ = [
    "ChannelRef",
    "LayerSelection",
    "LayerSpec",
    "call_name",
    "format_channel",
    "from_lucent",
    "layer_aliases",
    "layer_names",
    "layers_for",
    "parse_channel",
    "penultimate_layer",
    "resolve_layer_name",
    "resolve_layers",
    "split_call",
]

LayerSpec = str | type[nn.Module]
"""One layer selector: a name, a glob, ``"type:ClassName"`` or an ``nn.Module`` subclass."""

LayerSpecs = LayerSpec | Sequence[LayerSpec] | None
"""What to record: one selector, several, or ``None`` for every leaf module."""

_GLOB_CHARS = frozenset("*?[")
_TYPE_PREFIX = "type:"
OUTPUT = "output"


def split_call(name: str) -> tuple[str, int]:
    """Split ``"layer1.0.relu:2"`` into ``("layer1.0.relu", 2)``; no suffix means call 0."""
    module, sep, call = name.rpartition(":")
    if sep and call.isdigit():
        return module, int(call)
    return name, 0


def call_name(module_name: str, call: int) -> str:
    """The recorded name of a module's ``call``-th call in a forward pass."""
    return module_name if call == 0 else f"{module_name}:{call}"


def layer_names(model: nn.Module) -> list[str]:
    """Names of the leaf modules of ``model`` (those recorded by default), in definition order."""
    leaves = [name for name, m in model.named_modules() if not any(True for _ in m.children())]
    return [n if n else OUTPUT for n in leaves]


def layer_aliases(model: nn.Module) -> tuple[str, ...]:
    """The former name prefixes ``model`` declares (its ``layer_prefix_aliases``), else ``()``.

    Args:
        model: any module.
    """
    prefixes = getattr(type(model), "layer_prefix_aliases", ())
    return tuple(p for p in prefixes if isinstance(p, str) and p)


def _unalias(name: str, prefixes: Sequence[str], known: Mapping[str, object] | Sequence[str]) -> str | None:
    """``name`` without the first of ``prefixes`` it starts with, if that name is ``known``."""
    for prefix in prefixes:
        if name.startswith(prefix) and name[len(prefix):] in known:
            return name[len(prefix):]
        if name == prefix.rstrip("."):  # the former wrapper's network: the model's own output
            return ""
    return None


def resolve_layer_name(model: nn.Module, name: str) -> str:
    """The module name (``""`` for the model itself) that a layer name denotes in ``model``.

    Accepts ``"output"`` for the model, the architecture's names, and names under one of the
    model's :func:`layer_aliases` prefixes (``"model.layer4"`` for a registered ResNet's
    ``layer4``). No call suffix.

    Args:
        model: any module.
        name: a module name.

    Raises:
        RobustlensError: unknown name (with close matches).
    """
    modules = dict(model.named_modules())
    if name in modules and name:
        return name
    if name == OUTPUT:
        return ""
    found = _unalias(name, layer_aliases(model), modules)
    if found is None:
        names = [n for n in modules if n]
        raise RobustlensError(f"unknown layer {name!r}.{suggest(name, names)} "
                              "List the names with robustlens.activations.layer_names(model).")
    return found


def layers_for(layers: LayerSpecs | Mapping[str, LayerSpecs], model_name: str) -> LayerSpecs:
    """The layers for one model out of a selector or a per-model table.

    Args:
        layers: selectors that apply to every model, or a table model name -> selectors,
            where the key ``"*"`` covers the models not named.
        model_name: the model's name (in a study: its ``name``).

    Returns:
        The selectors for ``model_name`` (``layers`` itself when it is not a table).

    Raises:
        RobustlensError: the table has no entry for ``model_name`` and no ``"*"``.
    """
    if not isinstance(layers, Mapping):
        return layers
    if model_name in layers:
        return layers[model_name]
    if "*" in layers:
        return layers["*"]
    keys = sorted(map(str, layers))
    raise RobustlensError(f"the per-model layer table names no layers for model {model_name!r}"
                          f"{suggest(model_name, keys)} It has entries for {', '.join(keys)}; add "
                          f"one for {model_name!r} or a '*' entry for every other model.")


class ChannelRef(NamedTuple):
    """One channel of one recorded call: ``layer`` is a call name, ``channel`` an index."""

    layer: str
    channel: int

    def __str__(self) -> str:
        return format_channel(self.layer, self.channel)

    def select(self, activation: torch.Tensor) -> torch.Tensor:
        """This channel of a (B, C, ...) activation: a (B, ...) view."""
        if activation.ndim < 2:
            raise RobustlensError(f"{self} addresses a channel, but the activation of "
                                  f"{self.layer!r} has shape {tuple(activation.shape)}; "
                                  "expected (B, C, ...).")
        if not 0 <= self.channel < activation.shape[1]:
            raise RobustlensError(f"channel {self.channel} is out of range for {self.layer!r}, "
                                  f"which has {activation.shape[1]} channels: give an index from 0 to "
                                  f"{activation.shape[1] - 1}.")
        return activation[:, self.channel]


def format_channel(layer: str, channel: int) -> str:
    """The text address ``"layer#channel"`` of a channel of a recorded call."""
    return f"{layer}#{int(channel)}"


def parse_channel(address: str) -> ChannelRef:
    """Parse ``"layer4.2.relu:2#17"`` into ``ChannelRef("layer4.2.relu:2", 17)``.

    Raises:
        RobustlensError: when ``address`` has no ``#channel`` suffix or it is not an integer.
    """
    layer, sep, channel = address.rpartition("#")
    if not sep or not layer or not channel.lstrip("-").isdigit():
        hint = ""
        module, call = split_call(address)
        if call:
            hint = (f" {address!r} names call {call} of {module!r}; for Lucent's 'layer:channel' "
                    "text use robustlens.activations.from_lucent().")
        raise RobustlensError("expected a channel address 'layer#channel' (e.g. "
                              f"'layer4.2.relu#17'); received {address!r}.{hint}")
    return ChannelRef(layer, int(channel))


def from_lucent(address: str) -> ChannelRef:
    """Read a Lucent-style ``"layer:channel"`` address (``"layer4:0"``) as a :class:`ChannelRef`.

    The text after the last colon is the channel; the layer is call 0 of that module. A
    robustlens address with ``#`` is accepted too, so callers can take either form.
    """
    if "#" in address:
        return parse_channel(address)
    layer, sep, channel = address.rpartition(":")
    if not sep or not layer or not channel.isdigit():
        raise RobustlensError(f"expected a Lucent address 'layer:channel' (e.g. 'layer4:0') or "
                              f"'layer#channel'; received {address!r}.")
    return ChannelRef(layer, int(channel))


@dataclass(frozen=True)
class LayerSelection:
    """The modules chosen by :func:`resolve_layers`.

    Attributes:
        calls: module name (``""`` for the model) -> call indices to keep, ``None`` for all.
        strict: module names given by exact name: a non-tensor output is an error there, and
            is skipped silently for modules matched by a glob or a type.
    """

    calls: dict[str, frozenset[int] | None]
    strict: frozenset[str]

    @property
    def names(self) -> list[str]:
        """The selected module names (``"output"`` for the model), in definition order."""
        return [n if n else OUTPUT for n in self.calls]


def _type_matches(module: nn.Module, spec: str | type[nn.Module]) -> bool:
    if isinstance(spec, type):
        return isinstance(module, spec)
    wanted = spec[len(_TYPE_PREFIX):]
    return any(wanted in (c.__name__, f"{c.__module__}.{c.__qualname__}")
               for c in type(module).__mro__)


def resolve_layers(model: nn.Module, layers: LayerSpecs | Mapping[str, LayerSpecs] = None, *,
                   model_name: str | None = None) -> LayerSelection:
    """Choose the modules (and calls) of ``model`` that ``layers`` selects.

    Args:
        model: any ``nn.Module``.
        layers: ``None`` for every leaf module; or one or several of: an exact module name,
            optionally with a call suffix (``"layer1.0.relu:1"``), ``"output"`` for the model
            itself; a glob over module names (``"layer*.conv?"``, also with a call suffix);
            a module class (``nn.ReLU``); ``"type:ReLU"``. Or a table model name -> such
            selectors (see :func:`layers_for`), with ``model_name``. Names and globs under
            one of the model's :func:`layer_aliases` prefixes select the same modules
            without it.
        model_name: which entry of a per-model table applies.

    Raises:
        RobustlensError: for a name, glob or type that matches no module, or a per-model
            table without an entry for ``model_name``.
    """
    if isinstance(layers, Mapping):
        if model_name is None:
            raise RobustlensError("a per-model layer table needs the model's name: pass model_name= "
                                  "(or pick the entry with robustlens.activations.layers_for).")
        layers = layers_for(layers, model_name)
    modules = dict(model.named_modules())
    prefixes = layer_aliases(model)
    if layers is None:
        leaves: dict[str, frozenset[int] | None] = {
            name: None for name, m in modules.items() if not any(True for _ in m.children())}
        return LayerSelection(leaves, frozenset())
    specs: Sequence[LayerSpec] = [layers] if isinstance(layers, (str, type)) else list(layers)
    chosen: dict[str, set[int] | None] = {}
    strict: set[str] = set()

    def add(name: str, call: int | None) -> None:
        if call is None:
            chosen[name] = None
        elif name not in chosen:
            chosen[name] = {call}
        elif (calls := chosen[name]) is not None:
            calls.add(call)

    names = [n for n in modules if n]
    for spec in specs:
        if isinstance(spec, type) or (isinstance(spec, str) and spec.startswith(_TYPE_PREFIX)):
            hits = [n for n, m in modules.items() if n and _type_matches(m, spec)]
            if not hits:
                kinds = sorted({type(m).__name__ for m in modules.values()})
                label = spec.__name__ if isinstance(spec, type) else spec[len(_TYPE_PREFIX):]
                raise RobustlensError(f"no module of type {label!r} in the model."
                                      f"{suggest(label, kinds)} Its module types are: "
                                      f"{', '.join(kinds)}.")
            for n in hits:
                add(n, None)
            continue
        if not isinstance(spec, str):
            raise RobustlensError(f"a layer must be a name, a glob or an nn.Module class; "
                                  f"received {spec!r}.")
        module, call = split_call(spec)
        explicit_call = module != spec
        if _GLOB_CHARS & set(module):
            hits = [n for n in names if fnmatch.fnmatchcase(n, module)]
            for prefix in prefixes:
                if not hits and module.startswith(prefix):
                    hits = [n for n in names if fnmatch.fnmatchcase(n, module[len(prefix):])]
            if not hits:
                raise RobustlensError(f"the pattern {module!r} matches no layer. List the names "
                                      "with robustlens.activations.layer_names(model).")
            for n in hits:
                add(n, call if explicit_call else None)
            continue
        key = "" if module == OUTPUT and OUTPUT not in modules else module
        if key not in modules or (key == "" and module != OUTPUT):
            found = _unalias(module, prefixes, modules)
            if found is None:
                raise RobustlensError(f"unknown layer {spec!r}.{suggest(module, names)} "
                                      "List the names with robustlens.activations.layer_names(model).")
            key = found
        add(key, call)
        strict.add(key)
    frozen = {n: (None if c is None else frozenset(c)) for n, c in chosen.items()}
    order = {n: i for i, n in enumerate(modules)}
    ordered = dict(sorted(frozen.items(), key=lambda kv: order[kv[0]]))
    return LayerSelection(ordered, frozenset(strict))


_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                 nn.Flatten)


@torch.no_grad()
def penultimate_layer(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The call name of the last layer before the classification layer.

    With ``example``, runs ``model`` once on it and returns the last recorded leaf call before
    the one that produces the logits, skipping pass-through modules (dropout, identity,
    flatten). Without it, applies the same rule to the leaf modules in definition order
    (drop trailing pass-through modules, then the classifier, then pass-through modules
    again), which agrees for models defined in the order they run. For a torchvision
    ResNet50 this is ``"avgpool"`` (2048 values per image); for robustlens' small CNNs
    ``"classifier.1"``.

    Args:
        model: a classifier; it is not changed (its mode is restored).
        example: (B, ...) a valid input batch, e.g. one image; optional.
    """
    modules = dict(model.named_modules())
    if example is None:
        leaves = [n for n, m in modules.items() if n and not any(True for _ in m.children())]
        while leaves and isinstance(modules[leaves[-1]], _PASS_THROUGH):
            leaves.pop()
        leaves = leaves[:-1]
        while leaves and isinstance(modules[leaves[-1]], _PASS_THROUGH):
            leaves.pop()
        if not leaves:
            raise RobustlensError("the model has no layer before its output; name the layer "
                                  "explicitly.")
        return leaves[-1]

    from robustlens.activations.recorder import record

    was_training = model.training
    model.eval()
    try:
        with record(model) as rec:
            logits = model(example)
        calls = list(rec)
    finally:
        model.train(was_training)
    if isinstance(logits, torch.Tensor):
        while calls and rec[calls[-1]].shape == logits.shape \
                and torch.equal(rec[calls[-1]], logits):
            calls.pop()
    for name in reversed(calls):
        if not isinstance(modules.get(split_call(name)[0]), _PASS_THROUGH):
            return name
    raise RobustlensError("the model has no layer before its output; name the layer explicitly.")
