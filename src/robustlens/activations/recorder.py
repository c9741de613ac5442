"""Record what every layer computes, one entry per call.

``with record(model) as rec: model(x)`` fills ``rec`` (an ordered mapping) with one
activation per *call* of each recorded module, in call order. A module called several times
in one forward pass (torchvision's Bottleneck reuses its ``relu`` three times) yields
``layer1.0.relu``, ``layer1.0.relu:1``, ``layer1.0.relu:2``. Hooks are removed when the
``with`` block ends, even on error. Each new forward pass of ``model`` starts a new record.
Layers are chosen by name, glob or module type (see :mod:`robustlens.activations.layers`).

In-place safety. What was recorded never changes afterwards, whatever in-place operations
follow (``ReLU(inplace=True)``, ``out += identity``). By default (``copy="lazy"``) this is
copy-on-write: a recorded activation shares memory with the live tensor, and a
``TorchDispatchMode`` active inside the ``with`` block copies it just before any operation
writes to that memory; when the block ends, activations whose memory is still referenced
elsewhere (e.g. the logits the caller holds) are copied too. Recording every layer of a
network then costs little more than the forward pass itself. ``copy="eager"`` copies every
output when it is recorded (use it under ``torch.compile`` or functorch transforms, where
dispatch modes are not welcome); ``detach=False`` always copies eagerly, so the copies stay
differentiable. Writes that bypass PyTorch's dispatcher (through ``tensor.numpy()`` or
``.data``) are not seen inside the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.hooks import RemovableHandle

from robustlens.activations.layers import (
    ChannelRef,
    LayerSpec,
    call_name,
    layer_aliases,
    layer_names,
    parse_channel,
    resolve_layers,
    split_call,
)
from robustlens.errors import RobustlensError, suggest

__all__ = ["CopyMode", "Recording", "call_name", "layer_names", "record", "split_call"]

CopyMode = Literal["lazy", "eager"]

_StorageKey = tuple[torch.device, int]


def _storage_key(t: torch.Tensor) -> _StorageKey | None:
    try:
        return t.device, t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse, meta or functional tensors
        return None


def _external_refs(t: torch.Tensor, own: int) -> int:
    """How many tensors other than our ``own`` ones hold ``t``'s memory (>= 1 if unknown)."""
    try:
        count = torch._C._storage_Use_Count(t.untyped_storage()._cdata)
    except (AttributeError, RuntimeError, NotImplementedError):
        return 1
    return int(count) - 1 - own  # minus the temporary storage object made by this call


class Recording(Mapping[str, torch.Tensor]):
    """An ordered mapping of call name -> activation, filled by :func:`record`.

    Keys are the architecture's call names; a name under one of the model's former prefixes
    (:func:`~robustlens.activations.layers.layer_aliases`, e.g. ``"model.layer4.0.relu"``
    for a registered ResNet's ``"layer4.0.relu"``) finds the same entry.

    Args:
        aliases: the recorded model's former name prefixes.
    """

    def __init__(self, aliases: Sequence[str] = ()) -> None:
        self._data: dict[str, torch.Tensor] = {}
        self._shared: dict[_StorageKey, list[str]] = {}
        self._aliases = tuple(aliases)

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self._data[key]
        except KeyError:
            for prefix in self._aliases:
                if isinstance(key, str) and key.startswith(prefix) and key[len(prefix):] in self._data:
                    return self._data[key[len(prefix):]]
            raise KeyError(f"{key!r} was not recorded.{suggest(key, self._data)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def channel(self, address: str | ChannelRef) -> torch.Tensor:
        """One channel of a recorded activation.

        Args:
            address: ``"layer#channel"`` (e.g. ``"layer4.2.relu:2#17"``) or a ``ChannelRef``.

        Returns:
            (B, ...) the activation's slice at that index of dimension 1.
        """
        ref = parse_channel(address) if isinstance(address, str) else address
        return ref.select(self[ref.layer])

    def clear(self) -> None:
        self._data.clear()
        self._shared.clear()

    def _put(self, key: str, value: torch.Tensor) -> None:
        self._data[key] = value

    def _put_shared(self, key: str, value: torch.Tensor) -> None:
        """Keep ``value`` without copying; it is copied before anything writes to its memory."""
        self._data[key] = value
        skey = _storage_key(value)
        if skey is None:
            self._data[key] = value.clone()
        else:
            self._shared.setdefault(skey, []).append(key)

    def _before_write(self, target: Any) -> None:
        tensors = target if isinstance(target, (list, tuple)) else (target,)
        for t in tensors:
            if isinstance(t, torch.Tensor):
                skey = _storage_key(t)
                if skey is not None and skey in self._shared:
                    self._copy(self._shared.pop(skey))

    def _copy(self, keys: list[str]) -> None:
        # Swap the copy into the recorded tensor object itself (``.data`` neither bumps the
        # version counter nor touches the live tensor), so references already handed out
        # keep seeing the recorded values.
        for k in keys:
            if k in self._data:
                t = self._data[k]
                t.data = t.clone()

    def _release(self) -> None:
        """Copy the activations still sharing memory with tensors held elsewhere."""
        for keys in self._shared.values():
            live = [k for k in keys if k in self._data]
            if live and _external_refs(self._data[live[0]], len(live)) > 0:
                self._copy(live)
        self._shared.clear()

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._data.items())
        return f"Recording({items})"


_WRITES: dict[Any, tuple[tuple[int, str], ...]] = {}


def _written_arguments(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments an aten operator writes to (cached per operator)."""
    found = _WRITES.get(func)
    if found is None:
        found = tuple((i, a.name) for i, a in enumerate(func._schema.arguments)
                      if a.alias_info is not None and a.alias_info.is_write)
        _WRITES[func] = found
    return found


class _CopyBeforeWrite(TorchDispatchMode):
    """Copies a recorded activation before any operator writes to the memory it shares."""

    def __init__(self, recording: Recording) -> None:
        super().__init__()
        self.recording = recording

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if self.recording._shared:
            for position, name in _written_arguments(func):
                target = args[position] if position < len(args) else kwargs.get(name)
                if target is not None:
                    self.recording._before_write(target)
        return func(*args, **kwargs)


@contextmanager
def record(model: nn.Module, layers: LayerSpec | Sequence[LayerSpec] | None = None, *,
           detach: bool = True, copy: CopyMode = "lazy") -> Iterator[Recording]:
    """Record the activations of ``model``'s layers during forward passes.

    Args:
        model: any ``nn.Module``.
        layers: ``None`` records every leaf module and every call; otherwise names
            (``"layer1.0.relu"``, with a call suffix ``"layer1.0.relu:1"`` for one call only,
            ``"output"`` for the model's own output), globs (``"layer*.relu"``), module
            classes (``nn.ReLU``) or ``"type:ReLU"``; see :func:`resolve_layers`.
        detach: detach recorded tensors from the autograd graph (``False`` keeps them
            differentiable, e.g. for feature visualization; implies eager copies).
        copy: ``"lazy"`` (copy-on-write, see the module docstring) or ``"eager"``.

    Yields:
        A :class:`Recording`, filled in call order by each forward pass of ``model``.

    Raises:
        RobustlensError: for unknown layers (with close matches), or a layer named exactly
            whose output is not a tensor.
    """
    if copy not in ("lazy", "eager"):
        raise RobustlensError(f"copy must be 'lazy' or 'eager'; received {copy!r}.")
    selection = resolve_layers(model, layers)
    lazy = copy == "lazy" and detach
    modules = dict(model.named_modules())
    rec = Recording(layer_aliases(model))
    counts: dict[str, int] = {}
    handles: list[RemovableHandle] = []

    def reset(_module: nn.Module, _args: Any) -> None:
        rec._release()  # tensors of the previous pass handed out stay as recorded
        rec.clear()
        counts.clear()

    def make_hook(name: str, calls: frozenset[int] | None
                  ) -> Callable[[nn.Module, Any, Any], None]:
        label = name if name else "output"
        strict = name in selection.strict

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            call = counts.get(name, 0)
            counts[name] = call + 1
            if calls is not None and call not in calls:
                return
            if not isinstance(output, torch.Tensor):
                if not strict:
                    return
                raise RobustlensError(f"layer {label!r} returned {type(output).__name__}, not a "
                                      "tensor; record one of its submodules instead.")
            if lazy:
                rec._put_shared(call_name(label, call), output.detach())
            else:
                value = output.detach().clone() if detach else output.clone()
                rec._put(call_name(label, call), value)

        return hook

    guard = _CopyBeforeWrite(rec) if lazy else None
    try:
        handles.append(model.register_forward_pre_hook(reset))
        for name, calls in selection.calls.items():
            handles.append(modules[name].register_forward_hook(make_hook(name, calls)))
        if guard is not None:
            with guard:
                yield rec
        else:
            yield rec
    finally:
        for h in handles:
            h.remove()
        rec._release()
