"""Spearman / cosine / per-channel dissimilarity against scipy, and reducer merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine as scipy_cosine
from scipy.stats import pearsonr, rankdata, spearmanr

from robustlens.analysis import (
    ChannelDissimilarity,
    LayerDissimilarity,
    channel_dissimilarity,
    dissimilarity,
    pearson_dissimilarity,
    rank_rows,
)
from robustlens.errors import RobustlensError


def relu_pair(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.relu(torch.randn(shape, generator=g))  # many tied zeros
    return a, torch.relu(a + 0.5 * torch.randn(shape, generator=g))


def test_rank_rows_matches_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 0.0, 0.0, 0.0, 2.0]])
    np.testing.assert_array_equal(rank_rows(x)[0].numpy(), rankdata(x[0].numpy()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("shape", [(1,), (4, 1), (3, 2, 50), (6, 257)])
def test_rank_rows_matches_scipy_on_random_ties(dtype, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randint(-3, 4, shape, generator=g).to(dtype)  # few values: long runs of ties
    x = torch.where(torch.rand(shape, generator=g) < 0.3, torch.rand(shape, generator=g).to(dtype), x)
    got = rank_rows(x)
    assert got.dtype == torch.float64 and got.shape == x.shape
    np.testing.assert_array_equal(got.numpy(), rankdata(x.double().numpy(), axis=-1))


@pytest.mark.parametrize("metric", ["pearson", "spearman", "cosine"])
def test_per_image_against_scipy(metric):
    a, b = relu_pair(0, (5, 3, 4, 4))
    d = dissimilarity(a, b, metric).numpy()
    for i in range(5):
        x, y = a[i].flatten().double().numpy(), b[i].flatten().double().numpy()
        if metric == "pearson":
            expected = 1 - pearsonr(x, y).statistic
        elif metric == "spearman":
            expected = 1 - spearmanr(x, y).statistic
        else:
            expected = scipy_cosine(x, y)
        assert d[i] == pytest.approx(expected, abs=1e-12)


def test_pearson_default_unchanged():
    a, b = relu_pair(1, (4, 10))
    torch.testing.assert_close(pearson_dissimilarity(a, b), dissimilarity(a, b))
    torch.testing.assert_close(dissimilarity(a.numpy(), b.numpy(), "cosine"),
                               dissimilarity(a, b, "cosine"))  # arrays work too


def test_per_channel_against_scipy():
    a, b = relu_pair(2, (3, 4, 5, 5))
    d = channel_dissimilarity(a, b, "spearman")
    assert d.shape == (3, 4)
    for i in range(3):
        for c in range(4):
            x, y = a[i, c].flatten().numpy(), b[i, c].flatten().numpy()
            expected = 1 - spearmanr(x, y).statistic if np.ptp(x) and np.ptp(y) else math.nan
            np.testing.assert_allclose(float(d[i, c]), expected, atol=1e-12)
    zero = torch.zeros(1, 2, 3, 3)
    assert torch.isnan(channel_dissimilarity(zero, zero, "cosine")).all()
    with pytest.raises(RobustlensError, match="positions"):
        channel_dissimilarity(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(RobustlensError, match="metric"):
        dissimilarity(a, b, "kendall")  # type: ignore[arg-type]


def batches(n: int):  # type: ignore[no-untyped-def]
    for s in range(n):
        a, b = relu_pair(10 + s, (4, 3, 5, 5))
        va, vb = relu_pair(100 + s, (4, 6))
        yield {"conv": a, "fc": va}, {"conv": b, "fc": vb}


@pytest.mark.parametrize("cls", [LayerDissimilarity, ChannelDissimilarity])
def test_merge_equals_one_pass(cls):
    data = list(batches(6))
    one = cls("spearman")
    for a, b in data:
        one.update(a, b)
    parts = [cls("spearman") for _ in range(3)]
    for i, (a, b) in enumerate(data):
        parts[i % 3].update(a, b)
    merged = parts[2].merge(parts[0]).merge(parts[1])
    r1 = one.result().set_index(["layer"] + (["channel"] if cls is ChannelDissimilarity else []))
    r2 = merged.result().set_index(r1.index.names).loc[r1.index]
    np.testing.assert_allclose(r1[["mean", "std", "sem"]], r2[["mean", "std", "sem"]], rtol=1e-12)
    copy = cls("spearman")
    copy.load_state_dict(one.state_dict())
    np.testing.assert_allclose(copy.result()["mean"], one.result()["mean"])


def test_channel_reducer_numbers():
    data = list(batches(2))
    red = ChannelDissimilarity("cosine")
    for a, b in data:
        red.update(a, b)
    res = red.result()
    assert set(res["layer"]) == {"conv"}  # (B, D) layers have no per-channel value
    values = torch.cat([channel_dissimilarity(a["conv"], b["conv"], "cosine") for a, b in data])
    row = res[res["channel"] == 1].iloc[0]
    col = values[:, 1][~torch.isnan(values[:, 1])].numpy()
    assert row["n_images"] == len(col)
    assert row["mean"] == pytest.approx(col.mean(), rel=1e-12)
    assert row["std"] == pytest.approx(col.std(ddof=1), rel=1e-9)
