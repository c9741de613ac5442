"""Transfer (black-box) attacks: craft on a surrogate model, evaluate on the target."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustlens.attacks._loop import eval_mode
from robustlens.attacks.base import Attack, Outcome
from robustlens.errors import ConfigError

__all__ = ["Transfer", "transfer_outcome"]


@dataclass(frozen=True)
class Transfer(Attack):
    """Run ``attack`` against ``surrogate``; the attacked model only judges the result.

    The adversarial images never depend on the target model's gradients (a black-box
    transfer attack); ``success`` is the target model's verdict on them.

    Args:
        attack: any attack, e.g. ``PGD(eps=0.1, steps=20)``.
        surrogate: the model the images are crafted on (pixels in [0, 1] in, logits out).
    """

    attack: Attack
    surrogate: nn.Module = field(compare=False)
    eps: float = field(init=False)
    norm: str = field(init=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not isinstance(self.attack, Attack) or not isinstance(self.surrogate, nn.Module):
            raise ConfigError("Transfer(attack, surrogate) needs a robustlens attack and an "
                              f"nn.Module; received {type(self.attack).__name__} and "
                              f"{type(self.surrogate).__name__}.")
        object.__setattr__(self, "eps", self.attack.eps)
        object.__setattr__(self, "norm", self.attack.norm)

    @property
    def name(self) -> str:
        return "transfer_" + self.attack.name

    def _run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
             generator: torch.Generator | None, targets: torch.Tensor | None,
             early_stop: bool, scored: bool) -> Outcome:
        return transfer_outcome(self.attack, self.surrogate, model, images, labels, generator=generator,
                                targets=targets, scored=scored)


def transfer_outcome(attack: Attack, surrogate: nn.Module, model: nn.Module, images: torch.Tensor,
                     labels: torch.Tensor, *, generator: torch.Generator | None, targets: torch.Tensor | None,
                     scored: bool) -> Outcome:
    """Craft with ``attack`` on ``surrogate`` (white-box), then judge the images on ``model``
    with forward passes only: the step every transfer (black-box) attack shares.

    Args:
        attack: the white-box attack run on the surrogate.
        surrogate: the model the gradients come from.
        model: the attacked model (never differentiated).
        images: (B, C, H, W) pixels in [0, 1].
        labels: (B,) true classes.
        generator: the attack's randomness.
        targets: (B,) target classes of a targeted attack, else ``None``.
        scored: judge success on ``model`` (else ``success`` is ``None``).
    """
    crafted = attack._run(surrogate, images, labels, generator=generator, targets=targets,
                          early_stop=False, scored=False)
    if not scored:
        return Outcome(crafted.adversarial, None, crafted.targets)
    with eval_mode(model), torch.inference_mode():
        pred = model(crafted.adversarial).argmax(1)
    success = pred != labels if crafted.targets is None else pred == crafted.targets
    return Outcome(crafted.adversarial, success, crafted.targets)
