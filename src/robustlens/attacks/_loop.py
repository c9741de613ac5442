"""The one iterative gradient loop every gradient attack runs on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.attacks._threat import Norm, ascent_direction, project, random_start


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, restoring each one's own flag on exit.

    Batch-norm statistics and dropout must not change while an attack or an analysis runs.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def loss_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to the input only.

    Only the input's gradient is asked of autograd, so no parameter gradient is computed
    or accumulated: the model's ``.grad`` fields are never touched.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def iterative_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    norm: Norm,
    random_init: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Projected gradient ascent on the loss, in pixel space.

    ``x_{t+1} = proj_{B(x, eps) ∩ [0,1]}(x_t + step_size * direction(grad))``, starting at
    ``x`` or at a random point of the ball. FGSM is the case ``steps=1``,
    ``step_size=eps``, no random start.

    Returns:
        Detached adversarial images, same shape, dtype and device as ``images``.
    """
    x = images.detach()
    if eps == 0:
        return x.clone()
    x_adv = random_start(x, eps, norm, generator) if random_init else x.clone()
    with eval_mode(model):
        for _ in range(steps):
            grad = loss_gradient(model, x_adv, labels)
            x_adv = project(x_adv + step_size * ascent_direction(grad, norm), x, eps, norm)
    return x_adv.detach()
