"""FAB (Croce and Hein 2020): the fast adaptive boundary attack, a minimum-norm attack.

FAB looks for the smallest perturbation that changes the decision. At each iteration it
linearises the logit difference ``f_y - f_t`` (true class y, other class t) around the
current iterate ``x_k`` and projects two points onto the linearised boundary
``{z : f_y(x_k) - f_t(x_k) + <g, z - x_k> = 0}`` (``g`` its gradient), each by the step of
smallest norm that stays in the [0, 1] box: the iterate, ``d_1``, and the clean image
``x_0``, ``d_2``. The next iterate mixes the two, leaning towards the clean image by a
weight that grows with how far the iterate has drifted:

    alpha = min(||d_1|| / (||d_1|| + ||d_2||), alpha_max)
    x_{k+1} = clip((x_k + eta d_1)(1 - alpha) + (x_0 + eta d_2) alpha, 0, 1)

(``eta > 1`` overshoots the linearised boundary a little). Whenever ``x_{k+1}`` is
misclassified it is recorded if it is the smallest adversarial found so far, and the iterate
steps back towards the clean image, ``x_0 + beta (x_{k+1} - x_0)``: the search then follows
the boundary inwards. The defaults are the paper's and AutoAttack's: ``alpha_max = 0.1``,
``eta = 1.05``, ``beta = 0.9``, 100 iterations.

* FAB-T (``targeted="top"``, the version in AutoAttack): one run per target class, the
  ``n_targets`` most likely other classes of the clean image in turn, each linearising
  ``f_y - f_t`` for its target alone (one backward pass per iteration); success is any
  misclassification.
* untargeted FAB (``targeted=None``): at each iteration the class whose linearised boundary
  is nearest (one backward pass per class).

The projection (:func:`boundary_step`) is solved exactly and batched: L-inf and L2 by
sorting the coordinates' breakpoints, L1 by filling the coordinates with the largest
gradient first. Restarts after the first start at a random point at half the smallest
norm found so far (capped at eps). Only correctly classified images are attacked. An
example counts as adversarial when the smallest perturbation found is within ``eps``; the
image returned for the others is the clean one. ``minimal_norm`` of the result is the
smallest adversarial perturbation found (``inf`` where none within eps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from robustlens.attacks._loop import eval_mode, expected_logits
from robustlens.attacks._stochastic import effective_eot
from robustlens.attacks._threat import Norm, perturbation_norm
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["FAB", "FabTargeted", "boundary_step"]

FabTargeted = Literal["top"] | None
_TINY = 1e-12
_MIN_STEP = 1e-8  # the smallest projection norm used in alpha (as the published code)


def boundary_step(points: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: Norm
                  ) -> torch.Tensor:
    """The smallest step ``d`` with ``<w, d> = c`` that keeps ``points + d`` in [0, 1].

    Minimises ``||d||`` in ``norm`` per row. With ``s = sign(c)`` every coordinate moves in
    the direction ``s * sign(w_i)``, by at most the room ``u_i`` left in the box that way:

    * L-inf: ``|d_i| = min(lam, u_i)``; L2: ``|d_i| = min(lam |w_i|, u_i)`` (the KKT
      conditions), with ``lam >= 0`` solving ``sum_i |w_i| |d_i| = |c|``; that sum is
      piecewise linear in ``lam`` with breakpoints at ``u_i`` (L-inf) or ``u_i / |w_i|``
      (L2), so sorting them gives ``lam`` exactly;
    * L1: the coordinates with the largest ``|w_i|`` are filled to their room first, the last
      one partly.

    Where the box leaves too little room, the step moves every coordinate as far as it can
    towards the plane.

    Args:
        points: (B, D) points in [0, 1].
        w: (B, D) normals of the planes.
        c: (B,) the required change ``<w, d>``.
        norm: ``"inf"``, ``"2"`` or ``"1"``.

    Returns:
        (B, D) steps.
    """
    s = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    a = w.abs()
    direction = torch.sign(w) * s[:, None]
    room = torch.where(direction > 0, 1.0 - points, torch.where(direction < 0, points, 0.0)).clamp_min(0.0)
    need = c.abs()[:, None]
    if norm == "1":
        a_s, order = a.sort(dim=1, descending=True)
        room_s = room.gather(1, order)
        gain = a_s * room_s
        before = gain.cumsum(dim=1) - gain  # progress made by the coordinates ahead
        size_s = ((need - before) / a_s.clamp_min(_TINY)).clamp_min(0.0)
        size_s = torch.minimum(size_s, room_s) * (a_s > 0)
        size = torch.empty_like(size_s).scatter_(1, order, size_s)
        return direction * size
    rate = torch.where(a > 0, torch.ones_like(a) if norm == "inf" else a, torch.zeros_like(a))
    kink = torch.where(rate > 0, room / rate.clamp_min(_TINY), torch.zeros_like(room))
    kink_s, order = kink.sort(dim=1)
    a_s, rate_s, room_s = a.gather(1, order), rate.gather(1, order), room.gather(1, order)
    full = a_s * room_s
    done = full.cumsum(dim=1) - full  # progress of the coordinates already at their room
    slope = (a_s * rate_s).flip(1).cumsum(dim=1).flip(1)  # of those still moving
    reached = done + kink_s * slope >= need
    first = reached.float().argmax(dim=1, keepdim=True)
    lam = (need - done.gather(1, first)) / slope.gather(1, first).clamp_min(_TINY)
    lam = torch.where(reached.any(dim=1, keepdim=True), lam, kink_s[:, -1:])
    return direction * torch.minimum(lam * rate, room)


def _norm_rows(d: torch.Tensor, norm: Norm) -> torch.Tensor:
    if norm == "inf":
        return d.abs().amax(dim=1)
    if norm == "2":
        return d.norm(dim=1)
    return d.abs().sum(dim=1)


@dataclass(frozen=True)
class FAB(Attack):
    """The fast adaptive boundary attack (Croce and Hein 2020), L-inf, L2 or L1.

    A minimum-norm attack judged at ``eps``: see the module docstring for the iteration.

    Args:
        eps: radius in pixel units, in ``norm``: an example counts as adversarial when the
            smallest perturbation found is at most ``eps``; ``inf`` keeps the smallest
            adversarial found, however large.
        norm: ``"inf"``, ``"2"`` or ``"1"``: the norm minimised.
        targeted: ``"top"`` (FAB-T, as in AutoAttack: one run towards each of the
            ``n_targets`` most likely other classes) or ``None`` (untargeted: the nearest
            linearised boundary among all classes at each step).
        n_targets: target classes of FAB-T; fewer than the model's classes.
        steps: iterations per run.
        restarts: runs per target (untargeted: runs); the first starts at the clean image,
            the others at a random point.
        seed: seed of the default generator (random starts).
        alpha_max: the largest weight of the step from the clean image.
        eta: overshoot of the projection steps (> 1 crosses the linearised boundary).
        beta: the step back towards the clean image after an adversarial point, in (0, 1).
        eot_samples: logits and gradients averaged over this many forward passes (for
            stochastic models).
        warn_stochastic: warn when the model is stochastic and ``eot_samples == 1``.
    """

    eps: float
    norm: Norm = "inf"
    targeted: FabTargeted = "top"
    n_targets: int = 9
    steps: int = 100
    restarts: int = 1
    seed: int = 0
    alpha_max: float = field(default=0.1, kw_only=True)
    eta: float = field(default=1.05, kw_only=True)
    beta: float = field(default=0.9, kw_only=True)
    eot_samples: int = field(default=1, kw_only=True)
    warn_stochastic: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps, allow_inf=True, norm=self.norm)
        if self.targeted not in ("top", None):
            raise ConfigError(f"FAB targeted must be 'top' (FAB-T: the most likely other classes "
                              f"in turn) or None (untargeted); received {self.targeted!r}.")
        for name in ("n_targets", "steps", "restarts", "eot_samples"):
            check_positive_int(name, getattr(self, name))
        if not _number(self.alpha_max) or not 0 <= self.alpha_max <= 1:
            raise ConfigError(f"alpha_max must be a number in [0, 1]; received {self.alpha_max!r}.")
        if not _number(self.eta) or not self.eta >= 1:
            raise ConfigError(f"eta must be a number >= 1 (the overshoot; AutoAttack uses 1.05); "
                              f"received {self.eta!r}.")
        if not _number(self.beta) or not 0 < self.beta < 1:
            raise ConfigError(f"beta must be a number in (0, 1) (the step back; AutoAttack uses "
                              f"0.9); received {self.beta!r}.")

    @property
    def name(self) -> str:
        """``fab_t`` (FAB-T) or ``fab``; ``_l2`` / ``_l1`` appended for those norms."""
        base = "fab_t" if self.targeted == "top" else "fab"
        return base + {"inf": "", "2": "_l2", "1": "_l1"}[self.norm]

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if targets is not None:
            raise ConfigError("FAB picks its own targets (targeted='top') or none; it takes no "
                              "targets.")
        if generator is None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        with eval_mode(model):
            eot = effective_eot(model, images, self.eot_samples, warn=self.warn_stochastic, attack_name=self.name)
            return self._attack(model, images.detach(), labels, eot, generator, early_stop)

    def _attack(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor, eot: int,
                generator: torch.Generator, early_stop: bool) -> Outcome:
        with torch.inference_mode():
            clean = expected_logits(model, x0, eot).clone()
        n_classes = clean.shape[1]
        if n_classes < 2:
            raise ConfigError(f"FAB needs a model with at least 2 classes; this one has {n_classes}.")
        if self.targeted == "top" and self.n_targets >= n_classes:
            raise ConfigError(f"FAB-T's n_targets must be below the number of classes ({n_classes}): "
                              f"at most {n_classes - 1} other classes can be targets; received "
                              f"n_targets={self.n_targets}.")
        b = x0.shape[0]
        best = torch.full((b,), math.inf, device=x0.device, dtype=x0.dtype)
        best[clean.argmax(1) != labels] = 0.0  # misclassified already: the clean image
        best_adv = x0.clone()
        if self.targeted == "top":
            order = clean.scatter(1, labels[:, None], float("-inf")).argsort(dim=1, descending=True)
            runs: list[tuple[torch.Tensor | None, int]] = [
                (order[:, j], r) for j in range(self.n_targets) for r in range(self.restarts)]
        else:
            runs = [(None, r) for r in range(self.restarts)]
        bounded = math.isfinite(self.eps)
        for target, restart in runs:
            # with eps: the examples not yet broken within it; without: all, for a smaller norm
            todo = (best > self.eps if bounded else best > 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            t = None if target is None else target[todo]
            adv, found = self._single_run(model, x0[todo], labels[todo], t, best[todo],
                                          restart > 0, eot, generator, early_stop and bounded)
            better = found < best[todo]
            best_adv[todo[better]] = adv[better]
            best[todo[better]] = found[better]
        success = best <= self.eps
        adversarial = torch.where(success.view(-1, *([1] * (x0.ndim - 1))), best_adv, x0)
        found_norm = torch.where(success, best, torch.full_like(best, math.inf))
        return Outcome(adversarial, success, None, found_norm)

    def _single_run(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor,
                    target: torch.Tensor | None, best_so_far: torch.Tensor, random_start: bool,
                    eot: int, generator: torch.Generator, leave: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run: (smallest adversarial found (n, C, H, W), its norm (n,), inf if none)."""
        n = x0.shape[0]
        flat0 = x0.flatten(1)
        x = flat0.clone()
        if random_start:
            radius = torch.clamp(best_so_far, max=self.eps)
            radius = torch.where(torch.isfinite(radius), radius, torch.zeros_like(radius))
            x = (x + 0.5 * radius[:, None] * self._random_direction(flat0, generator)).clamp(0.0, 1.0)
        best = torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
        best_adv = flat0.clone()
        active = torch.arange(n, device=x0.device)
        for _ in range(self.steps):
            xa, x0a, ya = x[active], flat0[active], labels[active]
            df, g = self._linearise(model, xa.view(-1, *x0.shape[1:]), ya,
                                    None if target is None else target[active], eot)
            # both points onto the plane df + <g, z - x> = 0
            offset = (g * (x0a - xa)).sum(dim=1)
            steps = boundary_step(torch.cat([xa, x0a]), torch.cat([g, g]),
                                  torch.cat([-df, -df - offset]), self.norm)
            d1, d2 = steps[: len(active)], steps[len(active):]
            a1 = _norm_rows(d1, self.norm).clamp_min(_MIN_STEP)
            a2 = _norm_rows(d2, self.norm).clamp_min(_MIN_STEP)
            alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)[:, None]
            xa = ((xa + self.eta * d1) * (1 - alpha) + (x0a + self.eta * d2) * alpha).clamp(0.0, 1.0)
            with torch.inference_mode():
                pred = expected_logits(model, xa.view(-1, *x0.shape[1:]), eot).argmax(1)
            hit = pred != ya
            if bool(hit.any()):
                size = _norm_rows(xa - x0a, self.norm)
                smaller = hit & (size < best[active])
                idx = active[smaller]
                best[idx] = size[smaller]
                best_adv[idx] = xa[smaller]
                # step back towards the clean image and follow the boundary inwards
                xa = torch.where(hit[:, None], x0a + self.beta * (xa - x0a), xa)
            x[active] = xa
            if leave:
                keep = best[active] > self.eps
                if not bool(keep.all()):
                    active = active[keep]
                    if active.numel() == 0:
                        break
        # the norm of the image returned (recomputed as the result will be)
        found = torch.where(torch.isfinite(best), perturbation_norm((best_adv - flat0).view_as(x0), self.norm),
                            best)
        return best_adv.view_as(x0), found

    def _random_direction(self, flat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random directions (n, D) of unit norm in the attack's norm."""
        if self.norm == "inf":
            t = 2 * torch.rand(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype) - 1
        else:
            t = torch.randn(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)
        return t / _norm_rows(t, self.norm).clamp_min(_TINY)[:, None]

    def _linearise(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   target: torch.Tensor | None, eot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``f_y - f_j`` (n,) at ``x`` and its gradient (n, D), for the target ``j`` or, untargeted,
        the class whose linearised boundary is nearest in the attack's norm."""
        dual: dict[str, Norm] = {"inf": "1", "2": "2", "1": "inf"}
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = expected_logits(model, xg, eot)
            own = logits.gather(1, labels[:, None]).squeeze(1)
            if target is not None:
                diff = own - logits.gather(1, target[:, None]).squeeze(1)
                (g,) = torch.autograd.grad(diff.sum(), xg)
                return diff.detach(), g.flatten(1)
            k = logits.shape[1]
            best_d = torch.full_like(own, math.inf)
            best_df, best_g = torch.zeros_like(own), torch.zeros_like(xg).flatten(1)
            for j in range(k):
                if bool((labels == j).all()):
                    continue
                diff = own - logits[:, j]
                (g,) = torch.autograd.grad(diff.sum(), xg, retain_graph=j < k - 1)
                g = g.flatten(1)
                dist = diff.detach().abs() / (_norm_rows(g, dual[self.norm]) + _TINY)
                dist = torch.where(labels == j, torch.full_like(dist, math.inf), dist)
                closer = dist < best_d
                best_d = torch.where(closer, dist, best_d)
                best_df = torch.where(closer, diff.detach(), best_df)
                best_g = torch.where(closer[:, None], g, best_g)
        return best_df, best_g


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
