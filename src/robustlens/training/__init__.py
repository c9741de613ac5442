"""Training: standard and PGD adversarial training."""

from robustlens.training.trainer import (
    AdversarialTraining,
    TrainConfig,
    TrainResult,
    check_training_data,
    evaluate_accuracy,
    train_model,
)

__all__ = ["AdversarialTraining", "TrainConfig", "TrainResult", "check_training_data", "evaluate_accuracy",
           "train_model"]
