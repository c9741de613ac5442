"""DeepFool (Moosavi-Dezfooli et al. 2016), L-inf and L2, batched over the whole batch.

At each iteration every example still correctly classified linearises the logit
differences ``f_j - f_y`` around its current point and takes the smallest step that
crosses the nearest linearised boundary:

* L2: ``r = |f_j - f_y| / ||g_j||_2^2 * g_j``,
* L-inf: ``r = |f_j - f_y| / ||g_j||_1 * sign(g_j)``,

with ``g_j = grad_x (f_j - f_y)`` and ``j`` the class minimising
``|f_j - f_y| / ||g_j||_q`` (q the dual norm). Steps accumulate; the image is
``clip(x + (1 + overshoot) * sum r)``. Pixels already at 0 or 1 whose gradient points out of
the [0, 1] box are left out of ``g_j`` (otherwise clipping would eat part of every step and
the iterates would approach the boundary only geometrically). For an affine model one step
finds the exact minimal perturbation. Examples stop individually as soon as they are
misclassified (by a logit margin of at least 1e-4, so ties do not count); the batch shrinks,
there is no per-example Python loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlens.attacks._loop import EotPlan, eval_mode, expected_logits
from robustlens.attacks._stochastic import warn_if_stochastic
from robustlens.attacks._threat import Norm, dual_norm, perturbation_norm, project
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["DeepFool"]

_TINY = 1e-12
_SHRINK = 0.25  # re-run the forward on the rest once this fraction of the batch is done
_TIE = 1e-4  # logit units: a success needs a margin this clear; steps cross at least this much


def _gradient(f_other: torch.Tensor, x: torch.Tensor, c: int, j: int) -> torch.Tensor:
    """``grad_x f_other[:, j]`` through the graph of ``f_other`` (kept until the last one)."""
    (g,) = torch.autograd.grad(f_other[:, j].sum(), x, retain_graph=j < c - 2)
    return g


def _clear_miss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Misclassified with a margin of at least ``_TIE`` (ties do not count)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return other - own > _TIE


@dataclass(frozen=True)
class DeepFool(Attack):
    """DeepFool, a minimal-perturbation attack; untargeted.

    Args:
        norm: ``"inf"`` or ``"2"``: the norm whose perturbation is minimised.
        overshoot: the accumulated perturbation is scaled by ``1 + overshoot`` to cross
            the boundary.
        steps: maximum iterations; examples stop as soon as they are misclassified.
        candidates: the true class and the ``candidates - 1`` other classes with the
            largest clean logits are considered (``None``: all classes). Costs one backward
            pass per other candidate per iteration.
        eps: optional bound; a perturbation larger than ``eps`` (in ``norm``) is projected
            onto the eps-ball, as a fixed-eps evaluation requires. ``inf`` (default) keeps
            the minimal adversarial found. The result's ``minimal_norm`` is the size found
            before projection.
        eot_samples: logits and their gradients averaged over this many forward passes
            (for stochastic models).
        eot_chunk: EOT samples per pass (``None``: all k stacked in one pass on an accelerator,
            one at a time on a CPU for large images, as :class:`PGD` chooses). Fewer than k
            keeps only ``eot_chunk`` x B images' graphs at a time (a VOneResNet50 batch of 10
            with k = 4 holds a quarter of the memory), at the price of holding the
            ``candidates - 1`` averaged gradients (each the size of the batch) until the step.
        warn_stochastic: warn when the model is stochastic and ``eot_samples == 1``.
    """

    norm: Norm = "inf"
    overshoot: float = 0.02
    steps: int = 50
    candidates: int | None = 10
    eps: float = field(default=math.inf, kw_only=True)
    eot_samples: int = field(default=1, kw_only=True)
    eot_chunk: int | None = field(default=None, kw_only=True)
    warn_stochastic: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        check_norm(self.norm, ("inf", "2"))
        if not (isinstance(self.overshoot, int | float) and self.overshoot >= 0):
            raise ConfigError(f"overshoot must be a number >= 0; received {self.overshoot!r}.")
        check_positive_int("steps", self.steps)
        check_positive_int("eot_samples", self.eot_samples)
        if self.eot_chunk is not None:
            check_positive_int("eot_chunk", self.eot_chunk)
        if self.candidates is not None:
            check_positive_int("candidates", self.candidates)
            if self.candidates < 2:
                raise ConfigError(f"candidates must be >= 2 (the true class and at least one "
                                  f"other) or None; received {self.candidates!r}.")
        check_eps(self.eps, allow_inf=True, norm=self.norm)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if targets is not None:
            raise ConfigError("DeepFool is untargeted; use PGD(targeted=...) for targeted "
                              "attacks.")
        with eval_mode(model):
            if self.eot_samples == 1 and self.warn_stochastic:
                warn_if_stochastic(model, images, self.name)
            adversarial, success, found = self._deepfool(model, images.detach(), labels)
            if math.isfinite(self.eps):
                restricted = project(adversarial, images, self.eps, self.norm)
                changed = found > self.eps
                if bool(changed.any()):
                    adversarial = restricted
                    success = self._mean_logits(model, adversarial).argmax(1) != labels
        return Outcome(adversarial, success, None, found)

    def _deepfool(self, model: nn.Module, x0: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched DeepFool: (adversarial, success, perturbation norm) per example."""
        b = x0.shape[0]
        k = self.eot_samples
        clean = self._mean_logits(model, x0).clone()
        n_classes = clean.shape[1]
        c = n_classes if self.candidates is None else min(self.candidates, n_classes)
        others = clean.scatter(1, labels[:, None], float("-inf")).topk(c - 1, dim=1).indices

        x_adv = x0.clone()
        success = torch.zeros(b, dtype=torch.bool, device=x0.device)
        total = torch.zeros_like(x0)
        active = torch.arange(b, device=x0.device)
        scale = 1.0 + self.overshoot
        chunk = EotPlan.create(k, self.eot_chunk, x0).chunk
        turns = k > 1 and chunk < k  # the samples in turns: gradients averaged before the step
        for it in range(self.steps + 1):
            last = it == self.steps
            if turns:
                active, live, best_step = self._chunked_iteration(model, x_adv, active, labels, others, c, chunk,
                                                                  success, last)
            else:
                active, live, best_step = self._stacked_iteration(model, x_adv, active, labels, others, c,
                                                                  success, last)
            if best_step is None:
                break
            moving = active[live]
            total[moving] += best_step[live]
            x_adv[moving] = (x0[moving] + scale * total[moving]).clamp(0.0, 1.0)
            active = moving
        found = perturbation_norm(x_adv - x0, self.norm)
        return x_adv.detach(), success, found

    def _stacked_iteration(self, model: nn.Module, x_adv: torch.Tensor, active: torch.Tensor, labels: torch.Tensor,
                           others: torch.Tensor, c: int, success: torch.Tensor, last: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One iteration with the k samples in one pass, the ``c - 1`` gradients taken through its
        graph: the examples still active, which of them move, and their step (``None``: stop).
        Marks the examples found in ``success``."""
        x = x_adv[active].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = expected_logits(model, x, self.eot_samples)
            hit = _clear_miss(logits.detach(), labels[active])
            live = ~hit  # examples still to move; finished ones keep their image
            if bool(hit.any()):
                success[active[hit]] = True
                if not bool(live.any()):
                    return active, live, None
                if int(hit.sum()) >= _SHRINK * len(hit):
                    # many finished: a forward on the rest is cheaper than carrying them
                    # through c - 1 backward passes
                    active = active[live]
                    x = x_adv[active].detach().requires_grad_(True)
                    logits = expected_logits(model, x, self.eot_samples)
                    live = torch.ones(len(active), dtype=torch.bool, device=x.device)
            if last:
                return active, live, None
            y = labels[active]
            f_other = logits.gather(1, others[active]) - logits.gather(1, y[:, None])
            return active, live, self._step(x, f_other, c, functools.partial(_gradient, f_other, x, c))

    def _chunked_iteration(self, model: nn.Module, x_adv: torch.Tensor, active: torch.Tensor, labels: torch.Tensor,
                           others: torch.Tensor, c: int, chunk: int, success: torch.Tensor, last: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_stacked_iteration` with the k samples run ``chunk`` at a time: each chunk's
        graph is freed once its ``c - 1`` gradients are added to the running sums, so memory
        holds one chunk's graph and the ``c - 1`` summed gradients. The examples found at an
        iteration leave the batch at the next one."""
        x = x_adv[active].detach()
        logits, grads = self._averaged(model, x, labels[active], others[active], c, chunk, not last)
        hit = _clear_miss(logits, labels[active])
        success[active[hit]] = True
        live = ~hit
        if last or not bool(live.any()):
            return active, live, None
        y = labels[active]
        f_other = logits.gather(1, others[active]) - logits.gather(1, y[:, None])
        return active, live, self._step(x, f_other, c, grads.__getitem__)

    def _mean_logits(self, model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Mean logits (n, K) over the k samples, ``chunk`` (default: the attack's choice for
        ``x``) stacked per pass, without a graph."""
        k = self.eot_samples
        chunk = EotPlan.create(k, self.eot_chunk, x).chunk if chunk is None else chunk
        total = torch.zeros((), device=x.device)
        with torch.inference_mode():
            for start in range(0, k, chunk):
                m = min(chunk, k - start)
                total = total + expected_logits(model, x, m) * m
        return total / k

    def _averaged(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, others: torch.Tensor, c: int,
                  chunk: int, with_grads: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean logits (n, K) over the k samples and, if ``with_grads``, the mean gradients
        (c - 1, n, C, H, W) of ``f_j - f_y`` for each other candidate j."""
        k = self.eot_samples
        logits_sum = torch.zeros((), device=x.device)
        grads = torch.zeros((c - 1, *x.shape), device=x.device, dtype=x.dtype) if with_grads else x.new_empty(0)
        if not with_grads:
            return self._mean_logits(model, x, chunk), grads
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = expected_logits(model, xg, m)
                f_other = logits.gather(1, others) - logits.gather(1, y[:, None])
                for j in range(c - 1):
                    (g,) = torch.autograd.grad(f_other[:, j].sum(), xg, retain_graph=j < c - 2)
                    grads[j] += g * m
            logits_sum = logits_sum + logits.detach() * m
        return logits_sum / k, grads / k

    def _step(self, x: torch.Tensor, f_other: torch.Tensor, c: int,
              gradient: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """The step to the nearest linearised boundary (n, C, H, W).

        Args:
            x: the current points.
            f_other: (n, c - 1) logit differences ``f_j - f_y`` (< 0 while correctly classified).
            c: the candidates, the true class included.
            gradient: ``j -> grad_x (f_j - f_y)`` for the j-th other candidate.
        """
        shape = (-1, *([1] * (x.ndim - 1)))
        best_dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        best_step = torch.zeros_like(x)
        for j in range(c - 1):
            g = gradient(j)
            # pixels at the box edge cannot move outwards: drop them from the step
            g = g.masked_fill(((x <= 0) & (g < 0)) | ((x >= 1) & (g > 0)), 0.0)
            df = f_other[:, j].detach().abs().view(shape)
            q = dual_norm(g, self.norm)
            dist = (df / (q + _TINY)).flatten()
            df = df.clamp_min(_TIE)
            if self.norm == "2":
                step = df / (q.square() + _TINY) * g
            else:
                step = df / (q + _TINY) * g.sign()
            closer = dist < best_dist
            best_dist = torch.where(closer, dist, best_dist)
            best_step = torch.where(closer.view(shape), step, best_step)
        return best_step
