"""Evaluation: clean and robust accuracy."""

from robustlens.evaluation.accuracy import AccuracyCounter, robust_accuracy

__all__ = ["AccuracyCounter", "robust_accuracy"]
