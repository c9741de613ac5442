"""Threat models: the perturbation set's random start, step direction and projection.

All quantities are in pixel space: ``eps`` is a distance in units of the [0, 1] pixel range.
``eps`` is either one number for the whole batch or a tensor broadcastable to the images
(e.g. (B, 1, 1, 1): one radius per example). Three threat models: ``"inf"`` (L-inf: no pixel
moves by more than eps), ``"2"`` (L2: Euclidean norm over all pixels) and ``"1"`` (L1: sum of
absolute pixel changes; sparse perturbations).
"""

from __future__ import annotations

from typing import Literal

import torch

Norm = Literal["inf", "2", "1"]
NORMS: tuple[str, ...] = ("inf", "2", "1")

Radius = float | torch.Tensor

_TINY = 1e-12

L1_SPARSITY = 0.05
"""Fraction of the pixels an L1 ascent step moves: the largest gradient coordinates (a
sparse step, as SLIDE and APGD-L1 take; the exact L1 steepest ascent moves one pixel)."""


def _per_example_norm(x: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = x.flatten(1)
    if norm == "inf":
        n = flat.abs().amax(dim=1)
    elif norm == "2":
        n = flat.norm(p=2, dim=1)
    else:
        n = flat.abs().sum(dim=1)
    return n.view(-1, *([1] * (x.ndim - 1)))


def perturbation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of a perturbation (B, C, H, W) -> (B,), in pixel units.

    ``"inf"``: the largest absolute pixel change; ``"2"``: the Euclidean norm over all pixels;
    ``"1"``: the sum of the absolute pixel changes.
    """
    if delta.shape[0] == 0:
        return delta.new_zeros(0)
    return _per_example_norm(delta, norm).flatten()


def dual_norm(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example dual norm (B, 1, 1, 1): L1 for L-inf, L2 for L2, L-inf for L1."""
    dual: dict[str, Norm] = {"inf": "1", "2": "2", "1": "inf"}
    return _per_example_norm(g, dual[norm])


def random_start(x: torch.Tensor, eps: Radius, norm: Norm, generator: torch.Generator | None
                 ) -> torch.Tensor:
    """A random point of the eps-ball around ``x`` (then clipped to [0, 1]).

    L-inf: each pixel offset uniform in [-eps, eps]. L2: uniform in the ball (a Gaussian
    direction scaled to radius ``eps * u ** (1/d)`` with u uniform in [0, 1], d = pixels).
    L1: uniform in the ball (random signs times the first d of d + 1 exponential variables
    divided by their sum: a Dirichlet point of the simplex, which fills the ball uniformly).
    Clipping to [0, 1] only shrinks the offsets, so the start stays in the ball.
    """
    kw = {"generator": generator, "device": x.device, "dtype": x.dtype}
    if norm == "inf":
        u = torch.rand(x.shape, **kw)  # type: ignore[arg-type]
        delta = (2 * u - 1) * eps
    elif norm == "2":
        g = torch.randn(x.shape, **kw)  # type: ignore[arg-type]
        d = x[0].numel()
        u = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), **kw)  # type: ignore[arg-type]
        delta = g / _per_example_norm(g, "2").clamp_min(_TINY) * eps * u ** (1.0 / d)
    else:
        b, d = x.shape[0], x[0].numel()
        e = -torch.log(torch.rand((b, d + 1), **kw).clamp_min(_TINY))  # type: ignore[arg-type]
        mag = (e[:, :d] / e.sum(dim=1, keepdim=True)).view_as(x)
        sign = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype)
        delta = (2 * sign - 1) * mag * eps
    return (x + delta).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: Norm, x: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """The ascent direction of unit norm: sign(g) for L-inf, g / ||g||_2 for L2.

    L1: ``sign(g)`` on the :data:`L1_SPARSITY` fraction of pixels with the largest ``|g|``,
    divided by their number (unit L1 norm). When the current point ``x`` is given, pixels
    at 0 or 1 whose gradient points out of the [0, 1] box are left out first (clipping
    would undo their move).
    """
    if norm == "inf":
        return grad.sign()
    if norm == "2":
        return grad / _per_example_norm(grad, "2").clamp_min(_TINY)
    g = grad
    if x is not None:
        g = g.masked_fill(((x <= 0) & (g < 0)) | ((x >= 1) & (g > 0)), 0.0)
    flat = g.flatten(1).abs()
    k = max(1, round(L1_SPARSITY * flat.shape[1]))
    kth = flat.topk(k, dim=1).values[:, -1:]
    chosen = (flat >= kth) & (flat > 0)
    direction = (g.flatten(1).sign() * chosen)
    direction = direction / chosen.sum(dim=1, keepdim=True).clamp_min(1)
    return direction.view_as(grad)


def project_l1(delta: torch.Tensor, x: torch.Tensor, eps: Radius) -> torch.Tensor:
    """Euclidean projection of ``delta`` onto {d : ||d||_1 <= eps, 0 <= x + d <= 1}.

    Exact, by sorting: the solution is ``d_i = sign(u_i) * clamp(|u_i| - lam, 0, c_i)``
    with ``u = delta``, ``c_i`` the room left in the box in the direction of ``u_i`` and
    ``lam >= 0`` the smallest threshold with ``sum |d_i| <= eps``. ``sum |d_i|`` is
    piecewise linear in ``lam`` with kinks at ``|u_i| - c_i`` and ``|u_i|``; sorting the
    kinks gives its value at each of them, and ``lam`` is interpolated on the piece where
    it crosses ``eps``.

    Args:
        delta: the perturbation to project (B, C, H, W).
        x: the clean images (B, C, H, W) in [0, 1].
        eps: L1 radius (float or per-example tensor broadcastable to (B, 1, 1, 1)).

    Returns:
        The projected perturbation, shaped like ``delta``.
    """
    b = delta.shape[0]
    u = delta.flatten(1)
    x0 = x.flatten(1)
    a = u.abs()
    cap = torch.where(u >= 0, 1.0 - x0, x0).clamp_min(0.0)
    eps_v = torch.as_tensor(eps, dtype=u.dtype, device=u.device).reshape(-1)
    eps_v = eps_v.expand(b) if eps_v.numel() == 1 else eps_v.reshape(b)
    # kinks: at |u| - c the coordinate starts shrinking (slope -1), at |u| it reaches 0 (+1)
    kinks = torch.cat([a - cap, a], dim=1)
    events = torch.cat([torch.ones_like(a), -torch.ones_like(a)], dim=1)
    kinks, order = kinks.sort(dim=1)
    events = events.gather(1, order)
    slope = -events.cumsum(dim=1)  # slope of f on [kink_j, kink_{j+1}]
    widths = kinks.diff(dim=1)
    drops = (slope[:, :-1] * widths)
    f_at = cap.sum(dim=1, keepdim=True) + torch.cat(
        [torch.zeros_like(drops[:, :1]), drops.cumsum(dim=1)], dim=1)  # f(kink_j)
    f_zero = torch.minimum(a, cap).sum(dim=1)  # f(0)
    # last kink with f >= eps (f decreasing); lam lies on the piece after it
    above = f_at >= eps_v[:, None]
    j = (above.sum(dim=1, keepdim=True) - 1).clamp_min(0)
    lam = kinks.gather(1, j) + (f_at.gather(1, j) - eps_v[:, None]) \
        / (-slope.gather(1, j)).clamp_min(_TINY)
    lam = torch.where((f_zero > eps_v)[:, None], lam.clamp_min(0.0), torch.zeros_like(lam))
    d = u.sign() * torch.minimum((a - lam).clamp_min(0.0), cap)
    return d.view_as(delta)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Radius, norm: Norm) -> torch.Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` and the [0, 1] box.

    L-inf: clamp then clip (exact). L2: rescale into the ball, then clip to the box (clipping
    only shrinks the perturbation, so the result is in both). L1: the exact Euclidean
    projection onto the intersection of the ball and the box (:func:`project_l1`).
    """
    delta = x_adv - x
    if norm == "inf":
        bound = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        delta = torch.clamp(delta, -bound, bound)
    elif norm == "2":
        n = _per_example_norm(delta, "2")
        delta = delta * (eps / n.clamp_min(_TINY)).clamp(max=1.0)
    else:
        return (x + project_l1(delta, x, eps)).clamp(0.0, 1.0)
    return (x + delta).clamp(0.0, 1.0)
