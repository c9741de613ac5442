"""Clean and robust accuracy as streaming counts and tidy tables.

:class:`AccuracyCounter` is the one reducer behind every accuracy number robustlens reports:
the library's :func:`~robustlens.evaluation.evaluate_robustness` (summary and per-class
tables) and a study's ``accuracy`` and ``per_class`` tables all count with it, keyed by the
threat model ``(attack, eps, norm)`` so that attacks of different norms never merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from robustlens.attacks import Attack
from robustlens.data.dataset import ImageDataset

__all__ = ["TOP_K", "AccuracyCounter", "accuracy_tables", "robust_accuracy", "topk_correct"]

TOP_K = 5
"""The k of the ``top5_accuracy`` columns."""


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Whether each true class is among the ``k`` highest logits.

    With fewer than ``k`` classes every class is among the top k, so the result is all true
    (top-k accuracy over K < k classes is 1 by definition).

    Args:
        logits: (B, K) scores.
        labels: (B,) true classes.
        k: how many of the highest scores count.

    Returns:
        (B,) bool.
    """
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels.to(top.device)[:, None]).any(1)


class AccuracyCounter:
    """Per-class counts of correct top-1 and top-5 predictions; a mergeable reducer.

    Feed it logits (:meth:`update_logits`) to count top-1, top-5 and the expected accuracy
    of a stochastic model, or bare predictions (:meth:`update`; top-5 is then unknown and
    reads ``nan``).

    Args:
        num_classes: number of classes.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, dtype=torch.int64)
        self.correct_top5 = torch.zeros(num_classes, dtype=torch.int64)
        self.expected = torch.zeros(num_classes, dtype=torch.float64)
        self.total = torch.zeros(num_classes, dtype=torch.int64)
        self.top5_known = True

    def _add(self, labels: torch.Tensor, hit: torch.Tensor, hit5: torch.Tensor | None,
             expected: torch.Tensor | None) -> None:
        labels = labels.cpu()
        hit = hit.cpu().long()
        self.total += torch.bincount(labels, minlength=self.num_classes)
        self.correct += torch.bincount(labels, weights=hit, minlength=self.num_classes).long()
        if hit5 is None:
            self.top5_known = False
        else:
            self.correct_top5 += torch.bincount(labels, weights=hit5.cpu().long(),
                                                minlength=self.num_classes).long()
        weights = hit.double() if expected is None else expected.detach().cpu().double()
        self.expected += torch.bincount(labels, weights=weights, minlength=self.num_classes)

    def update(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of predicted and true class indices (B,) (top-5 becomes unknown).

        Args:
            predictions: (B,) predicted classes.
            labels: (B,) true classes.
        """
        self._add(labels, predictions.cpu() == labels.cpu(), None, None)

    def update_logits(self, logits: torch.Tensor, labels: torch.Tensor,
                      expected: torch.Tensor | None = None) -> None:
        """Add a batch of logits (B, K) and true classes (B,).

        Args:
            logits: (B, K) the model's outputs.
            labels: (B,) true classes.
            expected: (B,) per-image expected correctness over several passes of a
                stochastic model (see :func:`~robustlens.evaluation.expected_correct`);
                ``None``: the top-1 hits of ``logits``.
        """
        labels = labels.to(logits.device)
        self._add(labels, logits.argmax(1) == labels, topk_correct(logits, labels), expected)

    def merge(self, other: AccuracyCounter) -> AccuracyCounter:
        """Add another counter's counts (another worker's, or another shard's).

        Args:
            other: a counter over the same classes.
        """
        self.correct += other.correct
        self.correct_top5 += other.correct_top5
        self.expected += other.expected
        self.total += other.total
        self.top5_known = self.top5_known and other.top5_known
        return self

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy over every image counted (``nan`` before any)."""
        n = int(self.total.sum())
        return int(self.correct.sum()) / n if n else float("nan")

    def _rates(self, correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        return correct.double() / total.clamp_min(1).double()

    def result(self) -> pd.DataFrame:
        """One row: ``n_images, n_correct, accuracy, top5_accuracy, expected_accuracy``."""
        n = int(self.total.sum())
        top5 = int(self.correct_top5.sum()) / n if n and self.top5_known else float("nan")
        expected = float(self.expected.sum()) / n if n else float("nan")
        return pd.DataFrame([{"n_images": n, "n_correct": int(self.correct.sum()),
                              "accuracy": self.accuracy, "top5_accuracy": top5,
                              "expected_accuracy": expected}])

    def per_class(self) -> pd.DataFrame:
        """One row per class: ``class_index, n_images, n_correct, accuracy, top5_accuracy,
        expected_accuracy``."""
        top5 = self._rates(self.correct_top5, self.total) if self.top5_known \
            else torch.full((self.num_classes,), float("nan"), dtype=torch.float64)
        return pd.DataFrame({"class_index": range(self.num_classes), "n_images": self.total.numpy(),
                             "n_correct": self.correct.numpy(),
                             "accuracy": self._rates(self.correct, self.total).numpy(),
                             "top5_accuracy": top5.numpy(),
                             "expected_accuracy": self._rates(self.expected, self.total).numpy()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counts, as tensors (for checkpoints and gathering across workers)."""
        return {"correct": self.correct.clone(), "correct_top5": self.correct_top5.clone(),
                "expected": self.expected.clone(), "total": self.total.clone(),
                "top5_known": torch.tensor(self.top5_known)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore counts written by :meth:`state_dict`.

        Args:
            state: the counts.
        """
        self.correct, self.total = state["correct"].clone(), state["total"].clone()
        self.correct_top5 = state.get("correct_top5", torch.zeros_like(self.correct)).clone()
        self.expected = state.get("expected", self.correct.double()).clone()
        self.top5_known = bool(state.get("top5_known", torch.tensor("correct_top5" in state)))


ThreatKey = tuple[str, float, str]
"""(attack label, eps, norm); ``("clean", 0.0, "")`` for clean images."""


def accuracy_tables(counters: Mapping[ThreatKey, AccuracyCounter],
                    class_names: Sequence[str] | None = None,
                    order: Iterable[ThreatKey] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary and per-class accuracy tables of counters keyed by threat model.

    Args:
        counters: (attack, eps, norm) -> its counter.
        class_names: names of the class indices (adds a ``class_name`` column).
        order: the keys' row order (default: the counters' order).

    Returns:
        ``(summary, per_class)``: one row per key, ``attack, eps, norm, n_images,
        n_correct, accuracy, top5_accuracy, expected_accuracy``; and one row per key x
        class, ``attack, eps, norm, class_index[, class_name], n_images, ...``.
    """
    keys = list(order) if order is not None else list(counters)
    rows, frames = [], []
    for key in keys:
        attack, eps, norm = key
        head = {"attack": attack, "eps": float(eps), "norm": norm}
        rows.append({**head, **counters[key].result().iloc[0].to_dict()})
        pc = counters[key].per_class()
        for pos, (name, value) in enumerate(head.items()):
            pc.insert(pos, name, value)
        if class_names is not None:
            pc.insert(4, "class_name", [class_names[int(i)] for i in pc["class_index"]])
        frames.append(pc)
    summary = pd.DataFrame(rows, columns=["attack", "eps", "norm", "n_images", "n_correct", "accuracy",
                                          "top5_accuracy", "expected_accuracy"])
    summary["n_images"] = summary["n_images"].astype(int)
    summary["n_correct"] = summary["n_correct"].astype(int)
    per_class = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return summary, per_class


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
        n_images, n_correct, accuracy, top5_accuracy, expected_accuracy, n_passes,
        stochastic, early_exit, seconds``. ``top5_accuracy`` counts an image as right when
        its class is among the 5 highest logits (1.0 for models of fewer than 5 classes).
    """
    from robustlens.evaluation.results import evaluate_robustness

    results = evaluate_robustness(model, data, attacks, batch_size=batch_size, device=device,
                                  early_exit=early_exit, n_passes=n_passes,
                                  noise_baseline=noise_baseline, seed=seed, generator=generator)
    return results.summary
