"""Threat models: the perturbation set's random start, step direction and projection.

All quantities are in pixel space: ``eps`` is a distance in units of the [0, 1] pixel range.
``eps`` is either one number for the whole batch or a tensor broadcastable to the images
(e.g. (B, 1, 1, 1): one radius per example).
"""

from __future__ import annotations

from typing import Literal

import torch

Norm = Literal["inf", "2"]
NORMS: tuple[str, ...] = ("inf", "2")

Radius = float | torch.Tensor

_TINY = 1e-12


def _per_example_norm(x: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = x.flatten(1)
    n = flat.abs().amax(dim=1) if norm == "inf" else flat.norm(p=2, dim=1)
    return n.view(-1, *([1] * (x.ndim - 1)))


def perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of a perturbation (B, C, H, W) -> (B,), in pixel units.

    ``"inf"``: the largest absolute pixel change; ``"2"``: the Euclidean norm over all pixels.
    """
    if delta.shape[0] == 0:
        return delta.new_zeros(0)
    return _per_example_norm(delta, norm).flatten()


def dual_norm(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example dual norm (B, 1, 1, 1): L1 for an L-inf threat model, L2 for L2."""
    flat = g.flatten(1)
    n = flat.abs().sum(dim=1) if norm == "inf" else flat.norm(p=2, dim=1)
    return n.view(-1, *([1] * (g.ndim - 1)))


def random_start(x: torch.Tensor, eps: Radius, norm: Norm, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """A random point of the eps-ball around ``x`` (then clipped to [0, 1]).

    L-inf: each pixel offset uniform in [-eps, eps]. L2: uniform in the ball (a Gaussian
    direction scaled to radius ``eps * u ** (1/d)`` with u uniform in [0, 1], d = pixels).
    """
    if norm == "inf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (2 * u - 1) * eps
    else:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = x[0].numel()
        u = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=generator,
                       device=x.device, dtype=x.dtype)
        delta = g / _per_example_norm(g, "2").clamp_min(_TINY) * eps * u ** (1.0 / d)
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "inf":
        return grad.sign()
    return grad / _per_example_norm(grad, "2").clamp_min(_TINY)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Radius, norm: Norm) -> torch.Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x``, then clip to [0, 1]."""
    delta = x_adv - x
    if norm == "inf":
        bound = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        delta = torch.clamp(delta, -bound, bound)
    else:
        n = _per_example_norm(delta, "2")
        delta = delta * (eps / n.clamp_min(_TINY)).clamp(max=1.0)
    return (x + delta).clamp(0.0, 1.0)
