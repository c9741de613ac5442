"""FGSM and PGD: gradient attacks as small frozen configs.

Each attack is called as ``attack(model, images, labels) -> adversarial_images`` with
images of shape (B, C, H, W) holding pixels in [0, 1]. ``eps`` is measured in that pixel
scale (``8/255``, ``0.1``, ...). Results stay in the eps-ball around the images and in
[0, 1]. During the call every module runs in eval mode (batch-norm statistics frozen,
dropout off); afterwards the model's weights, buffers, modes and hooks are as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustlens._validation import check_images, check_labels
from robustlens.attacks._loop import iterative_attack
from robustlens.attacks._threat import NORMS, Norm
from robustlens.errors import ConfigError

__all__ = ["FGSM", "PGD", "Attack"]


def _check_eps(eps: float) -> None:
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"eps must be a finite number >= 0 in pixel units (e.g. 8/255); received {eps!r}.")


@dataclass(frozen=True)
class Attack:
    """Base of the attacks: validates the inputs, then runs :meth:`_run`."""

    eps: float

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Attack ``model`` on ``images`` (B, C, H, W) in [0, 1] with true ``labels`` (B,).

        Args:
            generator: source of randomness (random starts); by default one seeded
                from the attack's ``seed`` on the images' device.
        """
        check_images(images)
        check_labels(labels, images.shape[0])
        return self._run(model, images, labels.to(images.device), generator)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2.

    Args:
        eps: radius of the perturbation ball in pixel units (L-inf: per pixel; L2: over the
            whole image).
        steps: number of gradient steps.
        step_size: step length in pixel units; ``None`` uses Madry et al.'s
            ``2.5 * eps / steps``.
        norm: ``"inf"`` (step ``sign(g)``) or ``"2"`` (step ``g / ||g||_2``).
        random_start: start at a uniformly random point of the ball (L-inf: uniform per
            pixel; L2: uniform in the ball) instead of at the clean image.
        seed: seed of the default generator for the random start.
    """

    steps: int = 10
    step_size: float | None = None
    norm: Norm = "inf"
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be an integer >= 1; received {self.steps!r}.")
        if self.step_size is not None and not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ConfigError(f"step_size must be > 0 (pixel units) or None; received {self.step_size!r}.")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(map(repr, NORMS))}; received {self.norm!r}.")

    @property
    def effective_step_size(self) -> float:
        """The step length used: ``step_size`` or ``2.5 * eps / steps``."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
        if generator is None and self.random_start:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        return iterative_attack(
            model, images, labels, eps=self.eps, steps=self.steps,
            step_size=self.effective_step_size, norm=self.norm,
            random_init=self.random_start, generator=generator,
        )


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(x + eps * sign(grad))``.

    The one-step case of the shared loop: one step of length ``eps``, no random start.

    Args:
        eps: L-inf radius in pixel units.
    """

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
        return iterative_attack(model, images, labels, eps=self.eps, steps=1, step_size=self.eps,
                                norm="inf", random_init=False, generator=None)
