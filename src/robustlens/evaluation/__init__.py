"""Evaluation: robust accuracy, per-class and per-example results, worst case over attacks,
the FGSM sweet spot of two models, and the gradient-masking audit."""

from robustlens.evaluation.accuracy import (
    TOP_K,
    AccuracyCounter,
    accuracy_tables,
    robust_accuracy,
    topk_correct,
)
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
    "RobustnessResults",
    "eps_sweep",
    "evaluate_robustness",
    "expected_correct",
    "robust_accuracy",
    "topk_correct",
    "with_eps",
    "worst_case",
    "worst_case_accuracy",
]
