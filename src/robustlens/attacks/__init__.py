"""Adversarial attacks in pixel space: ``attack(model, images, labels) -> adversarial images``."""

from robustlens.attacks._loop import eval_mode, loss_gradient
from robustlens.attacks.gradient import FGSM, PGD, Attack

LinfPGD = PGD

__all__ = ["FGSM", "PGD", "Attack", "LinfPGD", "eval_mode", "loss_gradient"]
