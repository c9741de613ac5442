"""The one iterative gradient loop every gradient attack runs on.

The loop is assembled from three parts, never copied per variant:

* a threat model (:mod:`._threat`): random start, ascent direction, projection;
* a criterion (:class:`._criteria.Criterion`): untargeted / targeted, loss, success test;
* a gradient estimator (:func:`criterion_gradient`): the loss gradient, averaged over
  ``eot_samples`` stochastic forward passes (expectation over transformation) run as one
  stacked batch or in chunks that fit memory;
* a step rule (:class:`StepRule`): how the next point follows from the gradient. The default
  is PGD's fixed step; APGD's rule (:mod:`.apgd`) adds momentum, a step size halved at
  checkpoints and best-point tracking.

Random restarts wrap the loop and keep, per example, the strongest result; early exit
removes examples that are already adversarial from the batch between steps and restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.attacks._criteria import Criterion
from robustlens.attacks._threat import Norm, Radius, ascent_direction, project, random_start

__all__ = ["EotPlan", "LoopResult", "StepRule", "criterion_gradient", "eval_mode",
           "expected_logits", "gradient_attack", "iterative_attack", "loss_gradient"]

log = logging.getLogger(__name__)


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


def _stack(x: torch.Tensor, k: int) -> torch.Tensor:
    """k copies of a batch stacked along the batch dimension: (k * B, C, H, W)."""
    return x if k == 1 else x.repeat(k, *([1] * (x.ndim - 1)))


def expected_logits(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Mean logits (B, K) over ``samples`` forward passes, run as one stacked batch.

    Differentiable: gradients flow back to ``x``.
    """
    out: torch.Tensor = model(_stack(x, samples))
    return out if samples == 1 else out.view(samples, x.shape[0], -1).mean(dim=0)


# On a CPU, stacking the k EOT copies into one batch beyond about this many input elements
# is slower than k passes (measured: fmnist_cnn, batch 250, k = 8: 2.4x slower stacked);
# accelerators gain from the big batch instead.
_CPU_STACK_ELEMENTS = 1 << 16


@dataclass
class EotPlan:
    """How many of the k EOT samples run in one stacked pass; shrinks on out-of-memory.

    Attributes:
        samples: k, the number of gradient samples per step.
        chunk: samples per pass (``samples`` = one k x B batch).
    """

    samples: int = 1
    chunk: int = 1

    @classmethod
    def create(cls, samples: int, chunk: int | None, x: torch.Tensor | None = None) -> EotPlan:
        """A plan for k = ``samples``; ``chunk=None`` chooses for the device of ``x``.

        Automatic choice: on an accelerator all k samples in one stacked pass (halved on
        out-of-memory); on a CPU as many as fit in about 65k input elements (at least one),
        since big stacked batches run slower there than sequential passes.
        """
        if chunk is not None:
            return cls(samples, max(1, min(chunk, samples)))
        if x is not None and x.device.type == "cpu":
            fit = _CPU_STACK_ELEMENTS // max(1, x.numel())
            return cls(samples, max(1, min(samples, fit)))
        return cls(samples, samples)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def criterion_gradient(model: nn.Module, x: torch.Tensor, criterion: Criterion, plan: EotPlan
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The EOT loss gradient, the mean logits and the mean per-example loss at ``x``.

    The gradient is ``(1/k) * sum_i grad_x L(f_i(x))`` over k = ``plan.samples`` forward
    passes (with fresh model noise each), computed with respect to the input only.

    Args:
        model: the classifier.
        x: the points (B, C, H, W).
        criterion: labels / targets and loss.
        plan: the number of samples k and how many run per pass.

    Returns:
        ``(grad, logits, loss)``: grad shaped like ``x`` (B, C, H, W); detached mean logits
        (B, K); detached per-example loss averaged over the k samples (B,).
    """
    k = plan.samples
    if k == 1:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = model(xg)
            losses = criterion.losses(logits)
            (grad,) = torch.autograd.grad(losses.sum(), xg)
        return grad, logits.detach(), losses.detach()
    while True:
        try:
            grad = torch.zeros_like(x)
            logits_sum: torch.Tensor | None = None
            loss_sum = x.new_zeros(x.shape[0])
            done = 0
            with torch.enable_grad():
                while done < k:
                    n = min(plan.chunk, k - done)
                    xg = x.detach().requires_grad_(True)
                    logits = model(_stack(xg, n))
                    losses = criterion.tile(n).losses(logits)
                    (g,) = torch.autograd.grad(losses.sum() / k, xg)
                    grad += g
                    part = logits.detach().view(n, x.shape[0], -1).sum(dim=0)
                    logits_sum = part if logits_sum is None else logits_sum + part
                    loss_sum += losses.detach().view(n, x.shape[0]).sum(dim=0)
                    done += n
            assert logits_sum is not None
            return grad, logits_sum / k, loss_sum / k
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if plan.chunk == 1 or not _is_oom(err):
                raise
            plan.chunk = max(1, plan.chunk // 2)
            log.info("EOT: out of memory, now %d of %d samples per pass", plan.chunk, k)


def _final_logits(model: nn.Module, x: torch.Tensor, plan: EotPlan) -> torch.Tensor:
    with torch.inference_mode():
        return expected_logits(model, x, plan.samples).clone()


@dataclass
class LoopResult:
    """What the loop found.

    Attributes:
        adversarial: (B, C, H, W) images in the eps-ball and in [0, 1].
        success: (B,) bool from the last check of each example (mean logits over the EOT
            samples), or ``None`` where the loop made no final check.
    """

    adversarial: torch.Tensor
    success: torch.Tensor | None


class StepRule:
    """How the loop moves from one point to the next: PGD's fixed projected step.

    A rule sees every evaluated point (:meth:`observe`), makes the step (:meth:`step`),
    follows the batch as examples leave it (:meth:`keep`) and picks each example's answer
    when a run ends (:meth:`final`). It may keep per-example state (step sizes, best points);
    :meth:`start` resets it at every restart. Subclasses override what they need.

    Attributes:
        evaluate_last: evaluate the point after the last step too (``steps + 1`` gradient
            evaluations), for rules that keep the best point seen.
    """

    evaluate_last: bool = False

    def start(self, x: torch.Tensor, eps: torch.Tensor, steps: int) -> None:
        """A new run from ``x`` (B, C, H, W) with radii ``eps`` (B, 1, 1, 1)."""

    def observe(self, t: int, x: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor,
                hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """See evaluation ``t`` (0 = the start): point, gradient, loss (B,), success (B,).

        Returns the point and gradient to step from (a rule may move back to a better point).
        """
        return x, grad

    def step(self, t: int, x: torch.Tensor, grad: torch.Tensor, x_ref: torch.Tensor,
             eps: torch.Tensor, step_size: torch.Tensor, norm: Norm) -> torch.Tensor:
        """The next point: ``proj(x + step_size * direction(grad))``."""
        direction = ascent_direction(grad, norm, x if norm == "1" else None)
        return project(x + step_size * direction, x_ref, eps, norm)

    def keep(self, mask: torch.Tensor) -> None:
        """Only the examples where ``mask`` (B,) is true stay in the batch."""

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """Each example's answer at the end of a run (default: the last point)."""
        return x


def gradient_attack(
    model: nn.Module,
    images: torch.Tensor,
    criterion: Criterion,
    *,
    eps: Radius,
    steps: int,
    step_size: Radius,
    norm: Norm,
    random_init: bool,
    generator: torch.Generator | None,
    eot_samples: int = 1,
    eot_chunk: int | None = None,
    restarts: int = 1,
    early_stop: bool = False,
    check_success: bool = False,
    rule: StepRule | None = None,
) -> LoopResult:
    """Projected gradient ascent on the criterion's loss, in pixel space.

    ``x_{t+1} = proj_{B(x, eps) ∩ [0,1]}(x_t + step_size * direction(g_t))`` with ``g_t`` the
    (EOT-averaged) loss gradient, starting at ``x`` or at a random point of the ball. FGSM is
    the case ``steps=1``, ``step_size=eps``, no random start. A :class:`StepRule` replaces
    the fixed step (APGD).

    Args:
        model: the classifier; called in whatever mode it is in (callers use
            :func:`eval_mode`).
        images: clean images (B, C, H, W) in [0, 1].
        criterion: labels / targets and loss.
        eps: radius (float, or a tensor broadcastable to (B, 1, 1, 1)).
        steps: gradient steps per restart.
        step_size: step length, same units as eps (the default rule's).
        norm: threat model.
        random_init: start each restart at a random point of the ball.
        generator: randomness of the random starts (drawn for the whole batch, so the
            result does not depend on which examples left early).
        eot_samples: k, gradient samples per step.
        eot_chunk: samples per stacked pass; ``None`` chooses for the device (see
            :meth:`EotPlan.create`).
        restarts: independent runs; per example the successful (else lowest-margin) one is
            kept.
        early_stop: examples found adversarial (at a step's forward pass, which costs
            nothing extra) keep that image and leave the batch.
        check_success: make a final check even when not needed to pick among restarts.
        rule: the step rule; ``None``: PGD's fixed step.
    """
    x0 = images.detach()
    b = x0.shape[0]
    rule = StepRule() if rule is None else rule
    plan = EotPlan.create(eot_samples, eot_chunk, x0)
    eps_t = torch.as_tensor(eps, dtype=x0.dtype, device=x0.device)
    if eps_t.ndim == 0 and float(eps_t) == 0:
        return LoopResult(x0.clone(), _final_check(model, x0, criterion, plan)
                          if check_success or early_stop else None)
    eps_b = eps_t.expand(b).reshape(b, *([1] * (x0.ndim - 1))) if eps_t.ndim <= 1 else eps_t
    step_t = torch.as_tensor(step_size, dtype=x0.dtype, device=x0.device)
    step_b = step_t.expand(b).reshape(b, *([1] * (x0.ndim - 1))) if step_t.ndim <= 1 else step_t
    evaluations = steps + 1 if rule.evaluate_last else steps

    scored = restarts > 1 or check_success or early_stop
    best = x0.clone()
    best_success = torch.zeros(b, dtype=torch.bool, device=x0.device)
    best_margin = torch.full((b,), float("inf"), dtype=x0.dtype, device=x0.device)

    for _ in range(restarts):
        start = random_start(x0, eps_b, norm, generator) if random_init else x0
        if early_stop:
            active: torch.Tensor | None = (~best_success).nonzero().squeeze(1)
            assert active is not None
            if active.numel() == 0:
                break
        else:
            active = None
        if active is None:
            x_ref, eps_a, step_a, crit, x = x0, eps_b, step_b, criterion, start.clone()
        else:
            x_ref, eps_a, step_a = x0[active], eps_b[active], step_b[active]
            crit, x = criterion.subset(active), start[active].clone()
        rule.start(x, eps_a, steps)
        for t in range(evaluations):
            grad, logits, loss = criterion_gradient(model, x, crit, plan)
            hit = crit.is_adversarial(logits)
            if early_stop:
                assert active is not None
                if bool(hit.any()):
                    done = active[hit]
                    best[done] = x[hit]
                    best_success[done] = True
                    best_margin[done] = crit.margin(logits)[hit]
                    keep = ~hit
                    active, x, grad, loss, hit = active[keep], x[keep], grad[keep], \
                        loss[keep], hit[keep]
                    x_ref, eps_a, step_a = x_ref[keep], eps_a[keep], step_a[keep]
                    crit = crit.subset(keep.nonzero().squeeze(1))
                    rule.keep(keep)
                    if active.numel() == 0:
                        break
            x, grad = rule.observe(t, x, grad, loss, hit)
            if t == steps:
                break
            x = rule.step(t, x, grad, x_ref, eps_a, step_a, norm)
        if active is not None and active.numel() == 0:
            continue
        x = rule.final(x)
        if not scored:
            best = x.detach()
            continue
        logits = _final_logits(model, x, plan)
        success, margin = crit.is_adversarial(logits), crit.margin(logits)
        prev_success = best_success if active is None else best_success[active]
        prev_margin = best_margin if active is None else best_margin[active]
        better = (success & ~prev_success) | ((success == prev_success) & (margin < prev_margin))
        idx = better.nonzero().squeeze(1)
        where = idx if active is None else active[idx]
        best[where] = x[idx].detach()
        best_success[where] = success[idx]
        best_margin[where] = margin[idx]
    return LoopResult(best.detach(), best_success if scored else None)


def _final_check(model: nn.Module, x: torch.Tensor, criterion: Criterion, plan: EotPlan
                 ) -> torch.Tensor:
    return criterion.is_adversarial(_final_logits(model, x, plan))


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
    """Untargeted cross-entropy PGD (the skeleton's entry point); see :func:`gradient_attack`.

    Returns:
        Detached adversarial images, same shape, dtype and device as ``images``.
    """
    with eval_mode(model):
        return gradient_attack(model, images, Criterion(labels), eps=eps, steps=steps,
                               step_size=step_size, norm=norm, random_init=random_init,
                               generator=generator).adversarial
