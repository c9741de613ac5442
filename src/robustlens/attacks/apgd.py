"""APGD (Croce and Hein 2020): PGD with momentum and a step size that adapts itself.

APGD runs on the shared loop with its own step rule (:class:`ApgdRule`):

* the step ``z = P(x_k + eta * d(g_k))`` is mixed with the previous move,
  ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))`` with ``alpha = 0.75``
  (``1`` at the first step); ``P`` projects onto the eps-ball and the [0, 1] box;
* ``eta`` starts at ``2 eps`` and is halved at the checkpoints ``w_j = ceil(p_j N)``,
  ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, for every
  example where (1) the loss increased in fewer than 75% of the steps since the last
  checkpoint, or (2) the step size was not halved there and the best loss has not improved
  since; an example whose step is halved restarts from its best point;
* every example keeps the point of highest loss (and any adversarial point it met), so no
  step can lose ground.

The losses are cross-entropy, the logit margin or DLR (:func:`~._criteria.dlr_loss`);
``targeted="top"`` is APGD-T: the targeted DLR attack towards each of the ``n_targets`` most
likely other classes in turn, on the examples not yet misclassified. L1: the step moves the
5% of pixels with the largest gradients (leaving out those pinned at the box), and the
projection is the exact one onto the L1 ball and the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from robustlens.attacks._criteria import (
    LOSSES,
    Criterion,
    Loss,
    Targeted,
    check_targeted,
    choose_targets,
)
from robustlens.attacks._loop import (
    LoopResult,
    StepRule,
    eval_mode,
    expected_logits,
    gradient_attack,
)
from robustlens.attacks._stochastic import effective_eot
from robustlens.attacks._threat import Norm, ascent_direction, project
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["APGD", "ApgdRule", "apgd_checkpoints"]

_MOMENTUM = 0.75
_RHO = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` where APGD may halve its step size.

    ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``
    (Croce and Hein 2020, section 3.2), up to ``steps``. E.g. 100 steps:
    ``[0, 22, 41, 57, 70, 80, 87, 93, 99]``.

    Args:
        steps: N, the number of iterations.
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0 + 1e-9:
            break
        p.append(nxt)
    out: list[int] = []
    for pj in p:
        w = math.ceil(round(pj * steps, 9))
        if w <= steps and (not out or w > out[-1]):
            out.append(w)
    return out


class ApgdRule(StepRule):
    """APGD's step rule: momentum, checkpointed step-size halving, best-point tracking.

    Attributes:
        halvings: per checkpoint ``(iteration, mask (B,) of the examples whose step size
            was halved)`` of the current run, for inspection; masks refer to the batch as it
            was then.
    """

    evaluate_last = True

    def __init__(self, norm: Norm) -> None:
        self.norm = norm
        self.halvings: list[tuple[int, torch.Tensor]] = []

    _STATE = ("eta", "x_prev", "x_best", "grad_best", "loss_best", "loss_prev", "increases",
              "best_at_checkpoint", "halved_at_checkpoint", "found", "x_found")

    def start(self, x: torch.Tensor, eps: torch.Tensor, steps: int) -> None:
        for name in self._STATE:  # nothing carries over from an earlier run
            self.__dict__.pop(name, None)
        self.eta = (2.0 * eps).expand(x.shape[0], *([1] * (x.ndim - 1))).clone()
        self.checkpoints = set(apgd_checkpoints(steps)[1:])
        self.last_checkpoint = 0
        self.halvings = []

    def observe(self, t: int, x: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor,
                hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if t == 0:
            self.x_prev, self.x_best, self.grad_best = x.clone(), x.clone(), grad.clone()
            self.loss_best, self.loss_prev = loss.clone(), loss.clone()
            self.increases = torch.zeros_like(loss)
            self.best_at_checkpoint = loss.clone()
            self.halved_at_checkpoint = torch.zeros_like(hit)
            self.found, self.x_found = hit.clone(), x.clone()
            return x, grad
        self.increases += (loss > self.loss_prev).to(loss.dtype)
        self.loss_prev = loss.clone()
        better = loss > self.loss_best
        self.x_best[better] = x[better]
        self.grad_best[better] = grad[better]
        self.loss_best = torch.where(better, loss, self.loss_best)
        self.x_found[hit] = x[hit]
        self.found |= hit
        if t in self.checkpoints:
            window = t - self.last_checkpoint
            oscillating = self.increases < _RHO * window
            stalled = ~self.halved_at_checkpoint & (self.loss_best <= self.best_at_checkpoint)
            halve = oscillating | stalled
            self.eta[halve] /= 2
            x, grad = x.clone(), grad.clone()
            x[halve], grad[halve] = self.x_best[halve], self.grad_best[halve]
            self.x_prev[halve] = self.x_best[halve]
            self.loss_prev = torch.where(halve, self.loss_best, self.loss_prev)
            self.halved_at_checkpoint = halve
            self.best_at_checkpoint = self.loss_best.clone()
            self.increases.zero_()
            self.last_checkpoint = t
            self.halvings.append((t, halve.clone()))
        return x, grad

    def step(self, t: int, x: torch.Tensor, grad: torch.Tensor, x_ref: torch.Tensor,
             eps: torch.Tensor, step_size: torch.Tensor, norm: Norm) -> torch.Tensor:
        direction = ascent_direction(grad, norm, x if norm == "1" else None)
        z = project(x + self.eta * direction, x_ref, eps, norm)
        alpha = 1.0 if t == 0 else _MOMENTUM
        nxt = project(x + alpha * (z - x) + (1 - alpha) * (x - self.x_prev), x_ref, eps, norm)
        self.x_prev = x
        return nxt

    def keep(self, mask: torch.Tensor) -> None:
        for name in self._STATE:
            if name in self.__dict__:
                setattr(self, name, getattr(self, name)[mask])

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.found.view(-1, *([1] * (x.ndim - 1))), self.x_found, self.x_best)


ApgdTargeted = Targeted | Literal["top"]


@dataclass(frozen=True)
class APGD(Attack):
    """Auto-PGD (Croce and Hein 2020), L-inf, L2 or L1; untargeted, targeted or APGD-T.

    No step size to tune: it starts at ``2 * eps`` and adapts (see the module docstring).
    Each run starts at a random point of the ball; per example the best run is kept.

    Args:
        eps: radius in pixel units, in ``norm``.
        norm: ``"inf"``, ``"2"`` or ``"1"``.
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio: invariant to
            the logits' scale; 3 classes or more, 4 when targeted) or ``"margin"``.
        targeted: ``None`` (untargeted), the targeted modes of :class:`~.gradient.PGD`
            (a class index, ``"random"``, ``"least_likely"``, ``"given"``), or ``"top"``:
            APGD-T, a targeted run towards each of the ``n_targets`` most likely other
            classes in turn, on the examples still correctly classified; success is any
            misclassification.
        n_targets: target classes of ``targeted="top"`` (at most the number of classes
            minus one are used).
        steps: iterations per run (``steps + 1`` gradient evaluations).
        restarts: runs per target, each from its own random start.
        eot_samples: loss-gradient samples averaged per step (expectation over
            transformation, for stochastic models).
        seed: seed of the default generator.
        eot_chunk: EOT samples per stacked pass (``None``: chosen for the device).
        warn_stochastic: warn when the model is stochastic and ``eot_samples == 1``.
    """

    eps: float
    norm: Norm = "inf"
    loss: Loss = "ce"
    targeted: ApgdTargeted = None
    n_targets: int = 9
    steps: int = 100
    restarts: int = 1
    eot_samples: int = 1
    seed: int = 0
    eot_chunk: int | None = field(default=None, kw_only=True)
    warn_stochastic: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_eps(self.eps, norm=self.norm)
        if self.targeted != "top":
            check_targeted(self.targeted)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(map(repr, LOSSES))}; "
                              f"received {self.loss!r}.")
        for name in ("n_targets", "steps", "restarts", "eot_samples"):
            check_positive_int(name, getattr(self, name))
        if self.eot_chunk is not None:
            check_positive_int("eot_chunk", self.eot_chunk)

    @property
    def name(self) -> str:
        """``apgd_ce``, ``apgd_dlr``, ``apgd_margin``, ``apgd_t`` (the top-k sweep) or
        ``apgd_<loss>_targeted``; ``_l2`` / ``_l1`` appended for those norms."""
        if self.targeted == "top":
            base = "apgd_t" if self.loss == "dlr" else f"apgd_t_{self.loss}"
        elif self.targeted is not None:
            base = f"apgd_{self.loss}_targeted"
        else:
            base = f"apgd_{self.loss}"
        return base + {"inf": "", "2": "_l2", "1": "_l1"}[self.norm]

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if generator is None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        with eval_mode(model):
            eot = effective_eot(model, images, self.eot_samples, warn=self.warn_stochastic, attack_name=self.name)
            if self.targeted == "top":
                if targets is not None:
                    raise ConfigError("APGD(targeted='top') picks its own targets; build it "
                                      "with targeted='given' to pass targets.")
                return self._sweep(model, images, labels, eot, generator, early_stop)
            if self.targeted is None and targets is None:
                crit = Criterion(labels, None, self.loss)
            else:
                with torch.inference_mode():
                    probe = images if self.targeted == "least_likely" else images[:1]
                    logits = expected_logits(model, probe, eot).clone()
                chosen = choose_targets(self.targeted, labels, logits, logits.shape[1],
                                        targets, generator)
                crit = Criterion(labels, chosen, self.loss)
            out = self._loop(model, images, crit, eot, generator, early_stop, True)
        return Outcome(out.adversarial, out.success, crit.targets)

    def _loop(self, model: nn.Module, images: torch.Tensor, crit: Criterion, eot: int,
              generator: torch.Generator, early_stop: bool, scored: bool) -> LoopResult:
        return gradient_attack(
            model, images, crit, eps=self.eps, steps=self.steps, step_size=2 * self.eps,
            norm=self.norm, random_init=True, generator=generator, eot_samples=eot,
            eot_chunk=self.eot_chunk, restarts=self.restarts, early_stop=early_stop,
            check_success=scored, rule=ApgdRule(self.norm))

    def _sweep(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eot: int,
               generator: torch.Generator, early_stop: bool) -> Outcome:
        """APGD-T: targeted DLR runs towards the top other classes, on the survivors."""
        with torch.inference_mode():
            clean = expected_logits(model, images, eot).clone()
        n_classes = clean.shape[1]
        need = 4 if self.loss == "dlr" else 2
        if n_classes < need:
            raise ConfigError(f"APGD-T with the {self.loss} loss needs a model with at least "
                              f"{need} classes; this one has {n_classes}.")
        order = clean.scatter(1, labels[:, None], float("-inf")).argsort(dim=1, descending=True)
        n = min(self.n_targets, n_classes - 1)
        best = images.detach().clone()
        success = clean.argmax(1) != labels
        for j in range(n):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            crit = Criterion(labels[todo], order[todo, j], self.loss, any_class=True)
            out = self._loop(model, images[todo], crit, eot, generator, early_stop, True)
            assert out.success is not None
            # every run's image is kept until one succeeds (a later target may do better)
            best[todo] = out.adversarial
            success[todo] = out.success
        return Outcome(best, success, None)
