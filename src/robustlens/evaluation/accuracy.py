"""Clean and robust accuracy as streaming counts and tidy tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack
from robustlens.data.dataset import ImageDataset

__all__ = ["AccuracyCounter", "robust_accuracy"]


class AccuracyCounter:
    """Per-class counts of correct predictions; a mergeable reducer.

    Args:
        num_classes: number of classes.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, dtype=torch.int64)
        self.total = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of predicted and true class indices (B,)."""
        labels = labels.cpu()
        hit = (predictions.cpu() == labels).long()
        self.total += torch.bincount(labels, minlength=self.num_classes)
        self.correct += torch.bincount(labels, weights=hit, minlength=self.num_classes).long()

    def merge(self, other: AccuracyCounter) -> AccuracyCounter:
        self.correct += other.correct
        self.total += other.total
        return self

    @property
    def accuracy(self) -> float:
        n = int(self.total.sum())
        return int(self.correct.sum()) / n if n else float("nan")

    def result(self) -> pd.DataFrame:
        """One row: ``n_images, n_correct, accuracy``."""
        return pd.DataFrame([{"n_images": int(self.total.sum()),
                              "n_correct": int(self.correct.sum()), "accuracy": self.accuracy}])

    def per_class(self) -> pd.DataFrame:
        """One row per class: ``class_index, n_images, n_correct, accuracy``."""
        acc = self.correct.double() / self.total.clamp_min(1).double()
        return pd.DataFrame({"class_index": range(self.num_classes), "n_images": self.total.numpy(),
                             "n_correct": self.correct.numpy(), "accuracy": acc.numpy()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"correct": self.correct.clone(), "total": self.total.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.correct, self.total = state["correct"].clone(), state["total"].clone()


def robust_accuracy(model: nn.Module, data: ImageDataset,
                    attacks: Mapping[str, Attack | Sequence[Attack]], *,
                    batch_size: int = 256, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None, early_exit: bool | None = None,
                    n_passes: int = 1, noise_baseline: bool = False, seed: int = 0
                    ) -> pd.DataFrame:
    """Clean accuracy and robust accuracy under each attack, as a tidy table.

    The summary of :func:`~robustlens.evaluation.evaluate_robustness` (see there for
    early exit, stochastic models and the noise baseline).

    Args:
        model: any classifier taking pixels in [0, 1].
        data: the images to attack.
        attacks: label -> attack (or a list of the same attack at several eps); the label
            names the row (e.g. ``"pgd"``).
        batch_size: images per batch.
        device: where to run.
        generator: randomness for the attacks' random starts.
        early_exit: ``None``: on for deterministic models, off for stochastic ones.
        n_passes: forward passes averaged for ``expected_accuracy``.
        noise_baseline: add random-noise rows of every norm and eps used.
        seed: seed of the attacks' generator when ``generator`` is ``None``.

    Returns:
        One row per attack x eps (plus ``attack="clean"``, eps 0): ``attack, eps, norm,
        n_images, n_correct, accuracy, expected_accuracy, n_passes, stochastic, early_exit,
        seconds``.
    """
    from robustlens.evaluation.results import evaluate_robustness

    results = evaluate_robustness(model, data, attacks, batch_size=batch_size, device=device,
                                  early_exit=early_exit, n_passes=n_passes,
                                  noise_baseline=noise_baseline, seed=seed, generator=generator)
    return results.summary
