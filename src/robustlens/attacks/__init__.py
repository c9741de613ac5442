"""Adversarial attacks in pixel space: ``attack(model, images, labels) -> adversarial images``.

Gradient attacks (:class:`FGSM`, :class:`PGD`) share one loop built from a threat model
(L-inf / L2), a criterion (untargeted / targeted) and a gradient estimator with
expectation over transformation; :class:`DeepFool` finds minimal perturbations;
:class:`Transfer` crafts on a surrogate; :class:`RandomNoise` is the baseline of the same
size. ``attack.run(...)`` gives the per-example :class:`AttackResult`.
"""

from robustlens.attacks._criteria import TARGET_MODES, Objective, Targeted
from robustlens.attacks._loop import eval_mode, loss_gradient
from robustlens.attacks._stochastic import (
    FixedNoise,
    StochasticModelWarning,
    is_stochastic,
)
from robustlens.attacks._threat import NORMS, Norm, perturbation_norm
from robustlens.attacks.base import Attack, AttackResult, check_eps, max_eps
from robustlens.attacks.corruption import CORRUPTIONS, Corruption, corrupt
from robustlens.attacks.deepfool import DeepFool
from robustlens.attacks.gradient import FGSM, PGD
from robustlens.attacks.noise import RandomNoise
from robustlens.attacks.presets import PRESETS, create_preset, vonenet_pgd
from robustlens.attacks.substitute import Substitute
from robustlens.attacks.transfer import Transfer

LinfPGD = PGD

__all__ = [
    "CORRUPTIONS",
    "FGSM",
    "NORMS",
    "PGD",
    "PRESETS",
    "TARGET_MODES",
    "Attack",
    "AttackResult",
    "Corruption",
    "DeepFool",
    "FixedNoise",
    "LinfPGD",
    "Norm",
    "Objective",
    "RandomNoise",
    "StochasticModelWarning",
    "Substitute",
    "Targeted",
    "Transfer",
    "check_eps",
    "corrupt",
    "create_preset",
    "eval_mode",
    "is_stochastic",
    "loss_gradient",
    "max_eps",
    "perturbation_norm",
    "vonenet_pgd",
]
