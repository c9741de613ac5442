"""Private machinery: differentiable capture of layer calls, input checks, target handling.

:func:`capture` runs a model once and returns the (differentiable) outputs of the requested
module calls. Hooks live only for that one call and are removed in a ``finally`` block.
When the logits are not needed, the forward pass stops right after the last requested call
(a private exception raised from the hook), so an objective on an early layer costs only
the layers up to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from robustlens.activations.layers import OUTPUT, resolve_layer_name, split_call
from robustlens.errors import RobustlensError

__all__ = ["capture", "check_images", "module_training", "resolve_targets"]


class _Stop(Exception):
    """Raised from a hook once every requested call has been captured."""


def check_images(images: Any, name: str = "images") -> torch.Tensor:
    """Validate a (B, C, H, W) float batch of pixels in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise RobustlensError(f"{name} must be a torch.Tensor (B, C, H, W); received "
                              f"{type(images).__name__}.")
    if images.ndim != 4:
        raise RobustlensError(f"{name} must be shaped (B, C, H, W); received shape "
                              f"{tuple(images.shape)}.")
    if not images.is_floating_point():
        raise RobustlensError(f"{name} must be floating point in [0, 1]; received {images.dtype}.")
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise RobustlensError(f"{name} contain NaN or infinite values.")
    if images.numel() and (float(images.min()) < -1e-6 or float(images.max()) > 1 + 1e-6):
        raise RobustlensError(f"{name} must be pixels in [0, 1]; received values in "
                              f"[{float(images.min()):.3g}, {float(images.max()):.3g}].")
    return images


def resolve_targets(target: int | Iterable[int] | torch.Tensor | None, logits: torch.Tensor
                    ) -> torch.Tensor:
    """(B,) class indices: ``None`` -> the predicted classes; an int -> the same for all."""
    b, k = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().argmax(-1)
    t = torch.as_tensor(target, device=logits.device).long()
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise RobustlensError(f"target must be an int or shaped ({b},); received shape "
                              f"{tuple(t.shape)}.")
    if bool(((t < 0) | (t >= k)).any()):
        raise RobustlensError(f"target classes must be in [0, {k}); received {t.tolist()}.")
    return t


@contextmanager
def module_training(model: nn.Module, training: bool = False) -> Iterator[None]:
    """Set every submodule's mode, restoring each one's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def capture(model: nn.Module, x: torch.Tensor, calls: Iterable[str], *,
            need_output: bool = True) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """Run ``model(x)`` once and return its output and the requested calls' outputs.

    Args:
        model: any module.
        x: its input.
        calls: call names (``"layer4"``, ``"layer1.0.relu:2"``, ``"output"``).
        need_output: if ``False`` the pass stops after the last requested call, and the
            returned output is ``None``.

    Returns:
        The model output (or ``None``) and call name -> activation, still attached to the
        autograd graph (in-place operations after the call are guarded by a clone).

    Raises:
        RobustlensError: for unknown layers, or calls that did not happen.
    """
    wanted = list(dict.fromkeys(calls))
    modules = dict(model.named_modules())
    per_module: dict[str, dict[int, list[str]]] = {}  # module -> call -> the names asking for it
    for name in wanted:
        module, call = split_call(name)
        key = resolve_layer_name(model, module)  # unknown names: error with close matches
        per_module.setdefault(key, {}).setdefault(call, []).append(name)
    got: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles: list[RemovableHandle] = []

    def make_hook(key: str, keep: dict[int, list[str]]) -> Any:
        label = key if key else OUTPUT

        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            call = counts.get(key, 0)
            counts[key] = call + 1
            if call not in keep:
                return
            if not isinstance(output, torch.Tensor):
                raise RobustlensError(f"layer {label!r} returned {type(output).__name__}, not a "
                                      "tensor; address one of its submodules instead.")
            # a clone keeps the captured value safe from later in-place operations
            value = output.clone()
            for name in keep[call]:
                got[name] = value
            if not need_output and len(got) == len(wanted):
                raise _Stop

        return hook

    out: torch.Tensor | None = None
    try:
        for key, keep in per_module.items():
            handles.append(modules[key].register_forward_hook(make_hook(key, keep)))
        try:
            result = model(x)
            if need_output:
                if not isinstance(result, torch.Tensor):
                    raise RobustlensError(f"the model returned {type(result).__name__}; expected "
                                          "a logits tensor.")
                out = result
        except _Stop:
            pass
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in wanted if n not in got]
    if missing:
        seen = ", ".join(f"{k or OUTPUT} ({v} calls)" for k, v in counts.items())
        raise RobustlensError(f"these layer calls did not happen in a forward pass: {missing}; "
                              f"calls seen: {seen or 'none'}.")
    return out, got
