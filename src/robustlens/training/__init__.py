"""Training: standard and PGD adversarial training."""

from robustlens.training.trainer import (
    AdversarialTraining,
    TrainConfig,
    TrainResult,
    evaluate_accuracy,
    train_model,
)

__all__ = ["AdversarialTraining", "TrainConfig", "TrainResult", "evaluate_accuracy", "train_model"]
