"""Clean and robust accuracy as streaming counts and tidy tables."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack
from robustlens.attacks._loop import eval_mode
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
        return pd.DataFrame([{"n_images": int(self.total.sum()), "n_correct": int(self.correct.sum()),
                              "accuracy": self.accuracy}])

    def per_class(self) -> pd.DataFrame:
        """One row per class: ``class_index, n_images, n_correct, accuracy``."""
        acc = self.correct.double() / self.total.clamp_min(1).double()
        return pd.DataFrame({"class_index": range(self.num_classes), "n_images": self.total.numpy(),
                             "n_correct": self.correct.numpy(), "accuracy": acc.numpy()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"correct": self.correct.clone(), "total": self.total.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.correct, self.total = state["correct"].clone(), state["total"].clone()


def robust_accuracy(model: nn.Module, data: ImageDataset, attacks: Mapping[str, Attack], *,
                    batch_size: int = 256, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> pd.DataFrame:
    """Clean accuracy and robust accuracy under each attack, as a tidy table.

    Args:
        model: any classifier taking pixels in [0, 1].
        data: the images to attack.
        attacks: label -> attack; the label names the row (e.g. ``"pgd"``).
        batch_size: images per batch.
        device: where to run.
        generator: randomness for the attacks' random starts.

    Returns:
        One row per attack (plus ``attack="clean"``, eps 0): ``attack, eps, n_images,
        n_correct, accuracy``.
    """
    device = torch.device(device)
    model.to(device)
    counters = {"clean": AccuracyCounter(data.num_classes)}
    counters.update({label: AccuracyCounter(data.num_classes) for label in attacks})
    with eval_mode(model):
        for x, y in data.batches(batch_size):
            x, y = x.to(device), y.to(device)
            with torch.inference_mode():
                counters["clean"].update(model(x).argmax(1), y)
            for label, attack in attacks.items():
                x_adv = attack(model, x, y, generator=generator)
                with torch.inference_mode():
                    counters[label].update(model(x_adv).argmax(1), y)
    rows = []
    for label, counter in counters.items():
        eps = 0.0 if label == "clean" else float(attacks[label].eps)
        rows.append({"attack": label, "eps": eps, **counter.result().iloc[0].to_dict()})
    df = pd.DataFrame(rows)
    df["n_images"] = df["n_images"].astype(int)
    df["n_correct"] = df["n_correct"].astype(int)
    return df
