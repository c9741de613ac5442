"""FGSM and PGD: gradient attacks as small frozen configs on the shared loop.

Both are called as ``attack(model, images, labels) -> adversarial_images`` (see
:mod:`robustlens.attacks.base`). Both support targeted modes, expectation over
transformation (EOT) for stochastic models, and PGD random restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
from robustlens.attacks._loop import eval_mode, expected_logits, gradient_attack
from robustlens.attacks._stochastic import effective_eot
from robustlens.attacks._threat import Norm
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["FGSM", "PGD", "Attack", "L2PGD", "LinfPGD"]


def _check_common(attack: FGSM | PGD) -> None:
    check_eps(attack.eps, norm=attack.norm)
    check_targeted(attack.targeted)
    check_positive_int("eot_samples", attack.eot_samples)
    if attack.eot_chunk is not None:
        check_positive_int("eot_chunk", attack.eot_chunk)
    if attack.loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(map(repr, LOSSES))}; "
                          f"received {attack.loss!r}.")


def _criterion(attack: FGSM | PGD, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               given: torch.Tensor | None, generator: torch.Generator | None) -> Criterion:
    """Labels plus the targets of the attack's targeted mode (one clean pass if needed)."""
    targeted = attack.targeted
    if targeted is None and given is None:
        return Criterion(labels, None, attack.loss)
    with torch.inference_mode():
        probe = images if targeted == "least_likely" else images[:1]
        logits = expected_logits(model, probe, attack.eot_samples).clone()
    targets = choose_targets(targeted, labels, logits, logits.shape[1], given, generator)
    return Criterion(labels, targets, attack.loss)


def _run_gradient(attack: FGSM | PGD, model: nn.Module, images: torch.Tensor,
                  labels: torch.Tensor, *, steps: int, step_size: float, norm: Norm,
                  random_init: bool, restarts: int, generator: torch.Generator | None,
                  targets: torch.Tensor | None, early_stop: bool, scored: bool) -> Outcome:
    needs_rng = random_init or attack.targeted == "random"
    if generator is None and needs_rng:
        generator = torch.Generator(device=images.device).manual_seed(attack.seed)
    with eval_mode(model):
        eot_samples = effective_eot(model, images, attack.eot_samples, warn=attack.warn_stochastic,
                                    attack_name=attack.name)
        criterion = _criterion(attack, model, images, labels, targets, generator)
        result = gradient_attack(
            model, images, criterion, eps=attack.eps, steps=steps, step_size=step_size,
            norm=norm, random_init=random_init, generator=generator,
            eot_samples=eot_samples, eot_chunk=attack.eot_chunk, restarts=restarts,
            early_stop=early_stop, check_success=scored,
        )
    return Outcome(result.adversarial, result.success, criterion.targets)


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2.

    ``x_{t+1} = proj(x_t + step_size * d(g_t))`` with ``d(g) = sign(g)`` (L-inf) or
    ``g / ||g||_2`` (L2), projected onto the eps-ball around the clean image and clipped to
    [0, 1]. ``g_t`` is the gradient of the loss (cross-entropy of the true class, or minus
    that of the target), averaged over ``eot_samples`` forward passes.

    Args:
        eps: radius of the perturbation ball in pixel units (L-inf: per pixel; L2: over the
            whole image).
        steps: number of gradient steps.
        step_size: step length in pixel units; ``None`` uses Madry et al.'s
            ``2.5 * eps / steps``.
        norm: ``"inf"``, ``"2"`` or ``"1"`` (L1: a sparse step moving the pixels with the
            largest gradients, projected exactly onto the L1 ball and the [0, 1] box).
        random_start: start at a uniformly random point of the ball (L-inf: each pixel
            offset uniform in [-eps, eps]; L2: uniform in the ball, i.e. a Gaussian direction
            with radius ``eps * u ** (1/d)``; L1: uniform in the ball) instead of at the
            clean image.
        seed: seed of the default generator (random starts, random targets).
        targeted: ``None`` (untargeted), a class index, ``"random"`` (a random other
            class), ``"least_likely"`` (lowest clean logit) or ``"given"`` (targets passed
            to the call).
        eot_samples: k, loss-gradient samples per step, averaged (expectation over
            transformation, for stochastic models); cost k forward+backward passes per step.
        restarts: independent runs (each from its own random start); per example the
            successful run, else the one with the lowest margin, is kept.
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (logit margin; does not saturate) or
            ``"dlr"`` (difference of logits ratio, scale-invariant; 3 classes or more).
        eot_chunk: EOT samples per stacked pass; ``None`` chooses what is faster on the
            device: one k x B batch on an accelerator (halved on out-of-memory), passes of
            at most about 65k input elements on a CPU.
        warn_stochastic: warn when the model is stochastic and ``eot_samples == 1``.
    """

    eps: float
    steps: int = 10
    step_size: float | None = None
    norm: Norm = "inf"
    random_start: bool = True
    seed: int = 0
    targeted: Targeted = field(default=None, kw_only=True)
    eot_samples: int = field(default=1, kw_only=True)
    restarts: int = field(default=1, kw_only=True)
    loss: Loss = field(default="ce", kw_only=True)
    eot_chunk: int | None = field(default=None, kw_only=True)
    warn_stochastic: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        _check_common(self)
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if self.step_size is not None and not (
                isinstance(self.step_size, int | float) and self.step_size > 0
                and math.isfinite(self.step_size)):
            raise ConfigError("step_size must be > 0 (pixel units) or None; "
                              f"received {self.step_size!r}.")
        check_norm(self.norm)

    @property
    def name(self) -> str:
        """``"pgd"``, ``"pgd_l2"`` or ``"pgd_l1"``."""
        return "pgd" + {"inf": "", "2": "_l2", "1": "_l1"}[self.norm]

    @property
    def effective_step_size(self) -> float:
        """The step length used: ``step_size`` or ``2.5 * eps / steps``."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        return _run_gradient(self, model, images, labels, steps=self.steps,
                             step_size=self.effective_step_size, norm=self.norm,
                             random_init=self.random_start, restarts=self.restarts,
                             generator=generator, targets=targets, early_stop=early_stop,
                             scored=scored)


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(x + eps * sign(grad))``.

    The one-step case of the shared loop: one step of length ``eps``, no random start.
    Targeted: ``clip(x - eps * sign(grad CE(target)))``.

    Args:
        eps: L-inf radius in pixel units.
        targeted: as in :class:`PGD`.
        eot_samples: gradient samples averaged (for stochastic models).
        loss: ``"ce"`` or ``"margin"``.
        seed: seed of the default generator (random targets).
        eot_chunk: as in :class:`PGD`.
        warn_stochastic: as in :class:`PGD`.
    """

    eps: float
    targeted: Targeted = field(default=None, kw_only=True)
    eot_samples: int = field(default=1, kw_only=True)
    loss: Loss = field(default="ce", kw_only=True)
    seed: int = field(default=0, kw_only=True)
    eot_chunk: int | None = field(default=None, kw_only=True)
    warn_stochastic: bool = field(default=True, kw_only=True)
    norm: Norm = field(default="inf", init=False)

    def __post_init__(self) -> None:
        _check_common(self)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        return _run_gradient(self, model, images, labels, steps=1, step_size=self.eps,
                             norm="inf", random_init=False, restarts=1, generator=generator,
                             targets=targets, early_stop=early_stop, scored=scored)


@dataclass(frozen=True)
class LinfPGD(PGD):
    """:class:`PGD` with the L-inf threat model fixed (``norm`` cannot be set or replaced).

    Args:
        eps: L-inf radius in pixel units.
        steps: as in :class:`PGD`.
        step_size: as in :class:`PGD`.
        random_start: as in :class:`PGD`.
        seed: as in :class:`PGD`.
    """

    norm: Norm = field(default="inf", init=False)


@dataclass(frozen=True)
class L2PGD(PGD):
    """:class:`PGD` with the L2 threat model fixed (``norm`` cannot be set or replaced).

    Args:
        eps: L2 radius in pixel units (over the whole image).
        steps: as in :class:`PGD`.
        step_size: as in :class:`PGD`.
        random_start: as in :class:`PGD`.
        seed: as in :class:`PGD`.
    """

    norm: Norm = field(default="2", init=False)
