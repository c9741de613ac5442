"""Adversarial attacks in pixel space: ``attack(model, images, labels) -> adversarial images``.

Gradient attacks (:class:`FGSM`, :class:`PGD`, :class:`APGD`) share one loop built from a
threat model (L-inf / L2 / L1), a criterion (untargeted / targeted, its loss) and a gradient
estimator with expectation over transformation, with a step rule (PGD's fixed step, APGD's
adaptive one); :class:`Square` is a score-based black-box attack; :class:`AutoAttack` runs a
cascade of them on the surviving examples; :class:`DeepFool` and :class:`FAB` find minimal
perturbations; :class:`Transfer` crafts on a surrogate; :class:`RandomNoise` is the baseline
of the same size. ``attack.run(...)`` gives the per-example :class:`AttackResult`.
"""

from robustlens.attacks._criteria import LOSSES, TARGET_MODES, Criterion, Targeted, dlr_loss
from robustlens.attacks._loop import (
    EotPlan,
    StepRule,
    criterion_gradient,
    eval_mode,
    gradient_attack,
    loss_gradient,
)
from robustlens.attacks._stochastic import (
    FixedNoise,
    StochasticModelWarning,
    is_stochastic,
)
from robustlens.attacks._threat import NORMS, Norm, perturbation_norm, project_l1
from robustlens.attacks.apgd import APGD, apgd_checkpoints
from robustlens.attacks.autoattack import VERSIONS, AutoAttack, CascadeResult
from robustlens.attacks.base import Attack, AttackResult, check_eps, max_eps
from robustlens.attacks.corruption import CORRUPTIONS, Corruption, corrupt
from robustlens.attacks.deepfool import DeepFool
from robustlens.attacks.fab import FAB, boundary_step
from robustlens.attacks.gradient import FGSM, L2PGD, PGD, LinfPGD
from robustlens.attacks.noise import RandomNoise
from robustlens.attacks.presets import PRESETS, create_preset, vonenet_pgd
from robustlens.attacks.square import Square
from robustlens.attacks.substitute import Substitute
from robustlens.attacks.transfer import Transfer

__all__ = [
    "CORRUPTIONS",
    "APGD",
    "FAB",
    "FGSM",
    "L2PGD",
    "LOSSES",
    "NORMS",
    "PGD",
    "PRESETS",
    "TARGET_MODES",
    "VERSIONS",
    "Attack",
    "AttackResult",
    "Corruption",
    "AutoAttack",
    "CascadeResult",
    "Criterion",
    "DeepFool",
    "EotPlan",
    "FixedNoise",
    "LinfPGD",
    "Norm",
    "RandomNoise",
    "Square",
    "StepRule",
    "StochasticModelWarning",
    "Substitute",
    "Targeted",
    "Transfer",
    "apgd_checkpoints",
    "boundary_step",
    "check_eps",
    "corrupt",
    "create_preset",
    "criterion_gradient",
    "dlr_loss",
    "eval_mode",
    "gradient_attack",
    "is_stochastic",
    "loss_gradient",
    "max_eps",
    "perturbation_norm",
    "project_l1",
    "vonenet_pgd",
]
