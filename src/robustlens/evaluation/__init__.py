"""Evaluation: robust accuracy, per-class and per-example results, worst case over attacks,
the FGSM sweet spot of two models, the gradient-masking audit, the stages of an AutoAttack
cascade and the black-box check, both read from per-example results."""

from robustlens.evaluation.accuracy import (
    TOP_K,
    AccuracyCounter,
    accuracy_tables,
    robust_accuracy,
    topk_correct,
)
from robustlens.evaluation.black_box import attack_components, attack_kind, black_box_check
from robustlens.evaluation.cascade import cascade_stages, resolved_stages
from robustlens.evaluation.results import (
    RobustnessResults,
    eps_sweep,
    evaluate_robustness,
    expected_correct,
    with_eps,
    worst_case,
    worst_case_accuracy,
)

__all__ = [
    "TOP_K",
    "AccuracyCounter",
    "accuracy_tables",
    "attack_components",
    "attack_kind",
    "black_box_check",
    "cascade_stages",
    "RobustnessResults",
    "eps_sweep",
    "evaluate_robustness",
    "expected_correct",
    "resolved_stages",
    "robust_accuracy",
    "topk_correct",
    "with_eps",
    "worst_case",
    "worst_case_accuracy",
]
