"""Private machinery: ReLUs with a different backward pass, for every ReLU-like call.

:class:`ReLUGradientMode` is a ``TorchFunctionMode``: while it is active, every ``nn.ReLU`` /
``nn.ReLU6`` module and every functional ``F.relu``, ``torch.relu``, ``Tensor.relu`` (and
in-place forms), ``F.relu6`` and ``F.hardtanh(x, 0, max)`` call computes the same values but
back-propagates differently. No hook is registered, so nothing can be left behind.

- ``"guided"`` (guided backpropagation): only positive gradients pass, and only where the
  input was inside the active range.
- ``"redirected"`` (Lucid's ReLU gradient redirection for feature visualization): where the
  usual gradient of a whole ReLU output is zero (every unit dead, e.g. a channel that is
  negative on the initial grey image), the gradient passes instead wherever it would move
  the input towards the active range, so the optimisation can start.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ReLUGradientMode"]

Kind = Literal["guided", "redirected"]

_RELU_FUNCS = {torch.relu, torch.relu_, F.relu, torch.Tensor.relu, torch.Tensor.relu_}
_INPLACE_FUNCS = {torch.relu_, torch.Tensor.relu_}


class _ReLU(torch.autograd.Function):
    """clamp(x, 0, hi); the backward pass is chosen by ``kind``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, hi: float | None, kind: str) -> torch.Tensor:
        ctx.kind = kind
        low, high = x <= 0, (x >= hi) if hi is not None else None
        ctx.save_for_backward(low, high if high is not None else low)
        ctx.has_high = high is not None
        return x.clamp(0, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        low, high = ctx.saved_tensors
        outside = (low | high) if ctx.has_high else low
        usual = grad.masked_fill(outside, 0)
        if ctx.kind == "guided":
            return usual.clamp_min(0), None, None
        # descent moves x by -grad: block only what pushes x further out of the active range
        away = (low & (grad > 0))
        if ctx.has_high:
            away = away | (high & (grad < 0))
        redirected = grad.masked_fill(away, 0)
        return torch.where(usual.any(), usual, redirected), None, None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str,
         default: Any) -> Any:
    return args[position] if len(args) > position else kwargs.get(name, default)


def _relu_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
               ) -> tuple[Any, float | None, bool] | None:
    """(input, upper bound, in place) when ``func(*args, **kwargs)`` is a ReLU or ReLU6."""
    if func in _RELU_FUNCS:
        inplace = func in _INPLACE_FUNCS or bool(_arg(args, kwargs, 1, "inplace", False))
        return _arg(args, kwargs, 0, "input", None), None, inplace
    if func is F.relu6:
        return (_arg(args, kwargs, 0, "input", None), 6.0,
                bool(_arg(args, kwargs, 1, "inplace", False)))
    if func is F.hardtanh and float(_arg(args, kwargs, 1, "min_val", -1.0)) == 0.0:
        return (_arg(args, kwargs, 0, "input", None), float(_arg(args, kwargs, 2, "max_val", 1.0)),
                bool(_arg(args, kwargs, 3, "inplace", False)))
    return None


class ReLUGradientMode(TorchFunctionMode):
    """Routes every ReLU-like call through a ReLU with a ``kind`` backward pass."""

    def __init__(self, kind: Kind) -> None:
        super().__init__()
        self.kind = kind

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        call = _relu_call(func, args, kwargs)
        if call is None or not isinstance(call[0], torch.Tensor):
            return func(*args, **kwargs)
        x, hi, inplace = call
        out = _ReLU.apply(x, hi, self.kind)
        if inplace and not x.requires_grad:
            return x.copy_(out)
        return out  # an in-place ReLU on a tensor that needs gradients runs out of place
