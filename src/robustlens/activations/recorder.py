"""Record what every layer computes, one entry per call.

``with record(model) as rec: model(x)`` fills ``rec`` (an ordered mapping) with one
activation per *call* of each recorded module, in call order. A module called several times
in one forward pass (torchvision's Bottleneck reuses its ``relu`` three times) yields
``layer1.0.relu``, ``layer1.0.relu:1``, ``layer1.0.relu:2``. Outputs are cloned when they are
recorded, so later in-place operations cannot change them. Hooks are removed when the
``with`` block ends, even on error. Each new forward pass of ``model`` starts a new record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from robustlens.errors import RobustlensError, suggest

__all__ = ["Recording", "layer_names", "record", "split_call"]


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
    return [n if n else "output" for n in leaves]


class Recording(Mapping[str, torch.Tensor]):
    """An ordered mapping of call name -> activation, filled by :func:`record`."""

    def __init__(self) -> None:
        self._data: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(f"{key!r} was not recorded.{suggest(key, self._data)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()

    def _put(self, key: str, value: torch.Tensor) -> None:
        self._data[key] = value

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._data.items())
        return f"Recording({items})"


def _resolve(model: nn.Module, layers: Sequence[str] | None) -> dict[str, set[int] | None]:
    """Map module name -> the call indices to keep (``None``: every call)."""
    modules = dict(model.named_modules())
    if layers is None:
        return {name: None for name in modules if not any(True for _ in modules[name].children())}
    if isinstance(layers, str):
        layers = [layers]
    wanted: dict[str, set[int] | None] = {}
    for layer in layers:
        module, call = split_call(layer)
        if module == "output" and "output" not in modules:
            module = ""
        if module not in modules or (module == "" and layer != "output"):
            raise RobustlensError(
                f"unknown layer {layer!r}.{suggest(module, [n for n in modules if n])} "
                "List the names with robustlens.activations.layer_names(model)."
            )
        calls = wanted.setdefault(module, set())
        if calls is not None:
            calls.add(call)
    return wanted


@contextmanager
def record(model: nn.Module, layers: Sequence[str] | str | None = None, *,
           detach: bool = True) -> Iterator[Recording]:
    """Record the activations of ``model``'s layers during forward passes.

    Args:
        model: any ``nn.Module``.
        layers: module names to record, each optionally with a call suffix
            (``"layer1.0.relu:1"``); ``None`` records every leaf module and every call.
        detach: detach recorded tensors from the autograd graph (``False`` keeps them
            differentiable, e.g. for feature visualization).

    Yields:
        A :class:`Recording`, filled in call order by each forward pass of ``model``.
    """
    wanted = _resolve(model, layers)
    modules = dict(model.named_modules())
    rec = Recording()
    counts: dict[str, int] = {}
    handles: list[RemovableHandle] = []

    def reset(_module: nn.Module, _args: Any) -> None:
        rec.clear()
        counts.clear()

    def make_hook(name: str, calls: set[int] | None):  # type: ignore[no-untyped-def]
        label = name if name else "output"

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            call = counts.get(name, 0)
            counts[name] = call + 1
            if calls is not None and call not in calls:
                return
            if not isinstance(output, torch.Tensor):
                if layers is None:
                    return
                raise RobustlensError(f"layer {label!r} returned {type(output).__name__}, not a tensor; "
                                      "record one of its submodules instead.")
            value = output.detach().clone() if detach else output.clone()
            rec._put(call_name(label, call), value)

        return hook

    try:
        handles.append(model.register_forward_pre_hook(reset))
        for name, calls in wanted.items():
            handles.append(modules[name].register_forward_hook(make_hook(name, calls)))
        yield rec
    finally:
        for h in handles:
            h.remove()
