"""scikit-learn's bundled 8 x 8 handwritten digits: the tiniest real image set."""

from __future__ import annotations

import torch

from robustlens.data.dataset import ImageDataset

__all__ = ["load_digits"]


def load_digits(split: str = "all", test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """Load the 1,797 digits as float images in [0, 1], shape (N, 1, 8, 8).

    Args:
        split: ``"all"``, ``"train"`` or ``"test"``: a seeded, stratified split.
        test_fraction: share of each class in the test split.
        seed: seed of the split.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    names = tuple(str(n) for n in bunch.target_names)
    if split == "all":
        return ImageDataset(x, y, names, "digits")
    if split not in ("train", "test"):
        from robustlens.errors import DataError

        raise DataError(f"split must be 'all', 'train' or 'test'; received {split!r}.")
    g = torch.Generator().manual_seed(seed)
    test = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        test[members[: round(test_fraction * len(members))]] = True
    keep = test if split == "test" else ~test
    return ImageDataset(x[keep], y[keep], names, f"digits/{split}")
