"""Where a model lives: the one place robustlens works out a model's device."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model: that of its first parameter, else of its first buffer.

    A module with neither (a parameter-free function such as ``nn.ReLU()``) runs wherever
    its inputs are; for it this returns the CPU.

    Args:
        model: any module.

    Returns:
        The device new inputs for ``model`` should be created on.
    """
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
