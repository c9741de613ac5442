"""Random-noise baseline: a perturbation of the attack's norm and size, in a random direction.

A white-box attack that does not beat random noise of the same size points to gradient
masking (or to a broken attack).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlens.attacks._loop import eval_mode, expected_logits
from robustlens.attacks._threat import Norm, ascent_direction
from robustlens.attacks.base import Attack, Outcome, check_eps, check_norm, check_positive_int
from robustlens.errors import ConfigError

__all__ = ["RandomNoise"]


@dataclass(frozen=True)
class RandomNoise(Attack):
    """Random perturbations on the sphere of radius ``eps``, then clipped to [0, 1].

    L-inf: every pixel moves by ``±eps`` with a random sign (a corner of the ball, the
    largest L-inf noise of that size). L2: a Gaussian direction scaled to L2 norm ``eps``. L1:
sparse noise of L1 norm ``eps``.
    With several ``trials``, each example keeps the first draw that fools the model (one
    forward pass per trial on the examples not yet fooled).

    Args:
        eps: size in pixel units, in ``norm``.
        norm: ``"inf"``, ``"2"`` or ``"1"`` (L1: eps spread evenly over a random 5% of
            the pixels, with random signs).
        trials: random draws per example.
        seed: seed of the default generator.
    """

    eps: float
    norm: Norm = "inf"
    trials: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_eps(self.eps, norm=self.norm)
        check_positive_int("trials", self.trials)
        check_norm(self.norm)

    @property
    def name(self) -> str:
        return "noise" + {"2": "_l2", "1": "_l1"}.get(self.norm, "")

    def _draw(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.eps * ascent_direction(g, self.norm)).clamp(0.0, 1.0)

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        if targets is not None:
            raise ConfigError("RandomNoise is untargeted; it takes no targets.")
        if generator is None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        x0 = images.detach()
        best = self._draw(x0, generator)
        if self.trials == 1 and not scored:
            return Outcome(best, None)
        success = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        with eval_mode(model), torch.inference_mode():
            for trial in range(self.trials):
                cand = best if trial == 0 else self._draw(x0, generator)
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                hit = expected_logits(model, cand[todo], 1).argmax(1) != labels[todo]
                best[todo[hit]] = cand[todo[hit]]
                success[todo[hit]] = True
        return Outcome(best, success)
