"""Square attack (Andriushchenko et al. 2020): score-based random search, no gradients.

The attack only reads the model's logits (under :func:`torch.inference_mode`, so no graph is
built and no backward pass ever runs). Starting from a perturbation on the boundary of the
eps-ball, each query changes the perturbation inside a random square window and keeps the
change where it lowers the logit margin ``z_y - max_{j != y} z_j``; an example stops as soon
as the margin is negative (it is misclassified). The window's area is a fraction ``p`` of the
image that shrinks with the iterations (the published schedule: ``p_init`` halved after 10,
50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 iterations, rescaled to the query
budget).

* L-inf: the perturbation starts as vertical stripes of ``±eps``; a window is refilled with
  ``±eps``, one random sign per channel.
* L2: the perturbation is a sum of square "pseudo-Gaussian" bumps (concentric rings of
  weight ``1/(r+1)``, two halves of opposite sign), of L2 norm ``eps``. An update moves the
  energy of two windows into the first, reshaped with a new bump, and spends any budget left
  below ``eps``, so the norm stays at most ``eps``.

Stochastic models: the margin is read from the mean logits over ``eot_samples`` passes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlens.attacks._loop import eval_mode, expected_logits
from robustlens.attacks._stochastic import StochasticModelWarning, is_stochastic
from robustlens.attacks._threat import Norm, perturbation_norm
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["Square", "square_fraction"]

_TINY = 1e-12
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
             (6000, 128), (8000, 256))


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """The window's area as a fraction of the image at ``iteration`` of ``queries``.

    The schedule of Andriushchenko et al. for 10,000 iterations, rescaled to ``queries``.

    Args:
        p_init: the starting fraction.
        iteration: the current iteration (0-based).
        queries: the budget.
    """
    it = int(iteration / queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


def _bump(s: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """An s x s pseudo-Gaussian bump of unit L2 norm: two halves of opposite sign."""
    def rings(h: int, w: int) -> torch.Tensor:
        i = (torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2).abs()
        j = (torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2).abs()
        r = torch.maximum(i[:, None], j[None, :]).floor()
        return 1.0 / (r + 1)

    if s == 1:
        out = torch.ones(1, 1, device=device, dtype=dtype)
    else:
        top = s // 2
        out = torch.cat([rings(top, s), -rings(s - top, s)], dim=0)
    return out / out.norm().clamp_min(_TINY)


def _window_mask(b: int, h: int, w: int, s: int, rows: torch.Tensor, cols: torch.Tensor,
                 device: torch.device) -> torch.Tensor:
    """(B, 1, H, W) bool mask of the s x s windows with top-left corners (rows, cols)."""
    r = torch.arange(h, device=device)[None, :, None]
    c = torch.arange(w, device=device)[None, None, :]
    inside = (r >= rows[:, None, None]) & (r < rows[:, None, None] + s) \
        & (c >= cols[:, None, None]) & (c < cols[:, None, None] + s)
    return inside.view(b, 1, h, w)


def _paste(shape: torch.Size, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
           ) -> torch.Tensor:
    """An all-zero (B, C, H, W) tensor with ``patch`` (B, C, s, s) placed at (rows, cols)."""
    b, c, h, w = shape
    s = patch.shape[-1]
    out = patch.new_zeros(shape)
    bi = torch.arange(b, device=patch.device)[:, None, None, None]
    ci = torch.arange(c, device=patch.device)[None, :, None, None]
    ri = (rows[:, None] + torch.arange(s, device=patch.device))[:, None, :, None]
    cj = (cols[:, None] + torch.arange(s, device=patch.device))[:, None, None, :]
    out[bi, ci, ri, cj] = patch
    return out


@dataclass(frozen=True)
class Square(Attack):
    """The Square attack, untargeted, L-inf or L2; black-box (logits only, no gradients).

    Args:
        eps: radius in pixel units, in ``norm``.
        norm: ``"inf"`` or ``"2"``.
        queries: the query budget: at most this many forward passes per image (the first
            one is the starting point).
        seed: seed of the default generator.
        p_init: the starting window area as a fraction of the image (0.8 as AutoAttack;
            the paper's L-inf MNIST setting is 0.3).
        eot_samples: forward passes whose logits are averaged for every score (stochastic
            models); each query then costs this many passes.
    """

    eps: float
    norm: Norm = "inf"
    queries: int = 5000
    seed: int = 0
    p_init: float = field(default=0.8, kw_only=True)
    eot_samples: int = field(default=1, kw_only=True)

    def __post_init__(self) -> None:
        check_norm(self.norm, ("inf", "2"))
        check_eps(self.eps, norm=self.norm)
        if not (isinstance(self.queries, int) and not isinstance(self.queries, bool)
                and self.queries >= 1):
            raise ConfigError(f"queries (the Square attack's budget of forward passes per image) "
                              f"must be an integer >= 1; received {self.queries!r}.")
        if not (isinstance(self.p_init, int | float) and 0 < self.p_init <= 1):
            raise ConfigError(f"p_init must be in (0, 1]; received {self.p_init!r}.")
        check_positive_int("eot_samples", self.eot_samples)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if targets is not None:
            raise ConfigError("Square is untargeted; it takes no targets.")
        if images.ndim != 4:
            raise ConfigError(f"Square needs images shaped (B, C, H, W); received "
                              f"{tuple(images.shape)}.")
        if generator is None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        with eval_mode(model), torch.inference_mode():
            if self.eot_samples == 1 and is_stochastic(model, images):
                warnings.warn(f"{self.name}: the model is stochastic and each score is one noisy "
                              "pass; set eot_samples to average the logits over several.",
                              StochasticModelWarning, stacklevel=3)
            adv, success = self._search(model, images.detach(), labels, generator)
        return Outcome(adv, success)

    def _margin(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = expected_logits(model, x, self.eot_samples)
        own = logits.gather(1, y[:, None]).squeeze(1)
        return own - logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)

    def _search(self, model: nn.Module, x0: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x0.shape
        dev, dt = x0.device, x0.dtype
        delta = self._init(x0, gen)
        margin = self._margin(model, (x0 + delta).clamp(0, 1), y)
        for it in range(1, self.queries):
            todo = (margin > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            n = todo.numel()
            p = square_fraction(self.p_init, it, self.queries)
            s = int(min(max(round((p * h * w) ** 0.5), 1), h - 1 if h > 1 else 1, w))
            rows = torch.randint(0, h - s + 1, (n,), generator=gen, device=dev)
            cols = torch.randint(0, w - s + 1, (n,), generator=gen, device=dev)
            xs, ds = x0[todo], delta[todo]
            if self.norm == "inf":
                signs = torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=dev)
                patch = (2 * signs.to(dt) - 1).expand(n, c, s, s) * self.eps
                mask = _window_mask(n, h, w, s, rows, cols, dev)
                new = _paste(ds.shape, patch, rows, cols)
                # a window that would not change is refilled with the opposite signs
                same = ((new == ds) | ~mask).flatten(1).all(dim=1)
                new = torch.where(same.view(-1, 1, 1, 1), -new, new)
                cand = torch.where(mask, new, ds)
            else:
                rows2 = torch.randint(0, h - s + 1, (n,), generator=gen, device=dev)
                cols2 = torch.randint(0, w - s + 1, (n,), generator=gen, device=dev)
                cand = self._l2_update(xs, ds, s, rows, cols, rows2, cols2, gen)
            cand = (xs + cand).clamp(0, 1) - xs
            new_margin = self._margin(model, xs + cand, y[todo])
            better = new_margin < margin[todo]
            idx = todo[better]
            delta[idx] = cand[better]
            margin[idx] = new_margin[better]
        return (x0 + delta).clamp(0, 1), margin < 0

    def _init(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x0.shape
        dev, dt = x0.device, x0.dtype
        if self.norm == "inf":
            stripes = torch.randint(0, 2, (b, c, 1, w), generator=gen, device=dev).to(dt)
            delta = (2 * stripes - 1).expand(b, c, h, w) * self.eps
        else:
            s = max(h // 5, 1)
            delta = torch.zeros_like(x0)
            bump = _bump(s, dev, dt)
            for r in range(0, h - s + 1, s):
                for q in range(0, w - s + 1, s):
                    signs = torch.randint(0, 2, (b, c, 1, 1), generator=gen, device=dev).to(dt)
                    delta[:, :, r:r + s, q:q + s] = (2 * signs - 1) * bump
            delta = delta / perturbation_norm(delta, "2").clamp_min(_TINY).view(-1, 1, 1, 1) \
                * self.eps
        return (x0 + delta).clamp(0, 1) - x0

    def _l2_update(self, x0: torch.Tensor, delta: torch.Tensor, s: int, rows: torch.Tensor,
                   cols: torch.Tensor, rows2: torch.Tensor, cols2: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = delta.shape
        dev, dt = delta.device, delta.dtype
        m1 = _window_mask(n, h, w, s, rows, cols, dev)
        m2 = _window_mask(n, h, w, s, rows2, cols2, dev)
        union = m1 | m2
        energy = (delta * union).flatten(1).square().sum(1)  # moved into window 1
        left = (self.eps ** 2 - delta.flatten(1).square().sum(1)).clamp_min(0.0)  # unspent
        bump = _bump(s, dev, dt)
        if bool(torch.rand((), generator=gen, device=dev) < 0.5):
            bump = bump.T
        signs = 2 * torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=dev).to(dt) - 1
        old = delta * m1
        old = old / old.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)
        new = _paste(delta.shape, signs * bump / c ** 0.5, rows, cols) + old
        new = new / new.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)
        new = new * (energy + left).sqrt().view(-1, 1, 1, 1)
        out = torch.where(union, torch.zeros_like(delta), delta) + new
        norm = out.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return out * (self.eps / norm.clamp_min(_TINY)).clamp(max=1.0)
