"""Clean-vs-adversarial dissimilarity against scipy, and reducer merging."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import pearsonr, sem

from robustlens.analysis import LayerDissimilarity, pearson_dissimilarity


def test_equals_scipy_pearsonr_on_random_data() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, 4, 4, generator=g)
    b = a + 0.7 * torch.randn(6, 3, 4, 4, generator=g)
    d = pearson_dissimilarity(a, b)
    expected = [1 - pearsonr(a[i].flatten().double().numpy(), b[i].flatten().double().numpy())[0] for i in range(6)]
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_limits_and_undefined() -> None:
    a = torch.randn(3, 10)
    torch.testing.assert_close(pearson_dissimilarity(a, a), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(pearson_dissimilarity(a, -a), torch.full((3,), 2.0, dtype=torch.float64))
    const = torch.zeros(1, 10)
    assert math.isnan(float(pearson_dissimilarity(const, torch.randn(1, 10))[0]))


def _batches(seed: int, n: int):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        a = {"l1": torch.randn(5, 8, generator=g), "l2": torch.relu(torch.randn(5, 4, 5, generator=g))}
        b = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in a.items()}
        b["l2"][0] = 0.0
        a["l2"][0] = 0.0  # an all-zero (undefined) pair
        yield a, b


def test_merged_reducers_equal_one_pass_and_numpy() -> None:
    batches = list(_batches(1, 6))
    one = LayerDissimilarity()
    for a, b in batches:
        one.update(a, b)
    parts = [LayerDissimilarity() for _ in range(3)]
    for i, (a, b) in enumerate(batches):
        parts[i % 3].update(a, b)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    r1, r2 = one.result(), merged.result()
    np.testing.assert_allclose(r1[["mean", "std", "sem"]].to_numpy(), r2[["mean", "std", "sem"]].to_numpy(),
                               rtol=1e-12)
    values = torch.cat([pearson_dissimilarity(a["l1"], b["l1"]) for a, b in batches]).numpy()
    row = r1.set_index("layer").loc["l1"]
    assert row["n_images"] == 30
    np.testing.assert_allclose([row["mean"], row["sem"]], [values.mean(), sem(values)], rtol=1e-10)
    assert r1.set_index("layer").loc["l2", "n_undefined"] == 6
    # state round trip
    copy = LayerDissimilarity()
    copy.load_state_dict(one.state_dict())
    np.testing.assert_allclose(copy.result()["mean"], r1["mean"])
