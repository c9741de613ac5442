"""Deterministic, class-balanced subsampling."""

from __future__ import annotations

import torch

from robustlens.errors import DataError

__all__ = ["class_balanced_indices"]


def class_balanced_indices(labels: torch.Tensor, n_per_class: int, seed: int = 0,
                           num_classes: int | None = None) -> torch.Tensor:
    """Pick ``n_per_class`` indices of each class, at random but reproducibly.

    The choice depends only on ``labels``, ``n_per_class`` and ``seed`` (a private
    ``torch.Generator``; no global state). Within each class the indices are a random
    sample without replacement; the result is sorted by class, then by index. Classes without
    any example (those left out by a class selection) are skipped.

    Args:
        labels: (N,) integer class labels.
        n_per_class: examples to pick per class.
        seed: seed of the choice.
        num_classes: classes 0 .. num_classes - 1 (default: up to the largest label).

    Raises:
        DataError: if a class has fewer than ``n_per_class`` examples.
    """
    if n_per_class < 1:
        raise DataError(f"n_per_class must be >= 1; received {n_per_class}")
    labels = labels.cpu()
    k = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(k):
        members = torch.nonzero(labels == c).flatten()
        if not len(members):
            continue
        if len(members) < n_per_class:
            raise DataError(
                f"class {c} has {len(members)} examples, fewer than n_per_class={n_per_class}; "
                "lower n_per_class."
            )
        pick = members[torch.randperm(len(members), generator=generator)[:n_per_class]]
        chosen.append(pick.sort().values)
    return torch.cat(chosen)
