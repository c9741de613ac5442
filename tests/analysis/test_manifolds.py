"""Manifold dimension and participation ratio against scikit-learn / numpy; streaming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from robustlens.analysis import (
    ClassManifolds,
    manifold_dimension,
    participation_ratio,
    pca_variances,
)
from robustlens.errors import RobustlensError


def test_dimension_matches_sklearn_on_real_digits(digits):
    for c in (0, 7):
        x = digits.images[digits.labels == c].flatten(1).double().numpy()
        ratios = np.cumsum(PCA(svd_solver="full").fit(x).explained_variance_ratio_)
        for threshold in (0.5, 0.8, 0.95, 0.99):
            # scikit-learn's rule for PCA(n_components=threshold).n_components_
            expected = int(np.searchsorted(ratios, threshold, side="right")) + 1
            assert manifold_dimension(x, threshold) == expected
        assert manifold_dimension(x, 0.9) == PCA(0.9, svd_solver="full").fit(x).n_components_


def test_variances_and_participation_ratio_against_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g, dtype=torch.float64) * torch.arange(1, 9)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.numpy(), rowvar=False)))[::-1]
    np.testing.assert_allclose(pca_variances(x).numpy(), eig, rtol=1e-10)
    np.testing.assert_allclose(pca_variances(x).numpy(),
                               PCA().fit(x.numpy()).explained_variance_, rtol=1e-10)
    assert participation_ratio(x) == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=1e-10)
    iso = torch.randn(4000, 5, generator=g, dtype=torch.float64)
    assert participation_ratio(iso) == pytest.approx(5.0, rel=0.05)


@pytest.mark.parametrize("d", [1, 3, 7])
def test_known_subspace_plus_small_noise(d):
    g = torch.Generator().manual_seed(d)
    basis = torch.linalg.qr(torch.randn(50, d, generator=g, dtype=torch.float64)).Q  # (50, d)
    coords = torch.randn(200, d, generator=g, dtype=torch.float64) * 2.0
    x = coords @ basis.T + 0.01 * torch.randn(200, 50, generator=g, dtype=torch.float64) + 4.0
    assert manifold_dimension(x, 0.95) == d
    assert manifold_dimension(x.float(), 0.95) == d
    assert participation_ratio(x) == pytest.approx(d, rel=0.5)


def test_degenerate_and_bad_input():
    assert manifold_dimension(torch.ones(5, 4)) == 0
    assert np.isnan(participation_ratio(torch.ones(5, 4)))
    with pytest.raises(RobustlensError, match="threshold"):
        manifold_dimension(torch.randn(5, 4), 95)
    with pytest.raises(RobustlensError, match="at least 2"):
        manifold_dimension(torch.randn(1, 4))


def test_class_manifolds_streaming_matches_direct(digits):
    x, labels = digits.images[:300].flatten(1), digits.labels[:300]
    one = ClassManifolds(10, 0.9, class_names=digits.class_names)
    parts = [ClassManifolds(10, 0.9) for _ in range(3)]
    for k, lo in enumerate(range(0, 300, 64)):
        batch = {"pixels": x[lo:lo + 64], "half": x[lo:lo + 64, :32]}
        one.update(batch, labels[lo:lo + 64])
        parts[k % 3].update(batch, labels[lo:lo + 64])
    merged = parts[0].merge(parts[2]).merge(parts[1])
    res = one.result()
    assert len(res) == 20 and res["class_name"].iloc[4] == "4"
    for c in (0, 3, 9):
        xc = x[labels == c].double()
        np.testing.assert_allclose(one.covariance("pixels", c).numpy(), np.cov(xc.numpy(),
                                   rowvar=False), atol=1e-12)
        row = res[(res["layer"] == "pixels") & (res["class"] == c)].iloc[0]
        assert row["n_images"] == len(xc)
        assert row["dimension"] == manifold_dimension(xc, 0.9)
        assert row["participation_ratio"] == pytest.approx(participation_ratio(xc), rel=1e-9)
        assert row["total_variance"] == pytest.approx(float(xc.var(0).sum()), rel=1e-9)
    m = merged.result()
    pd.testing.assert_frame_equal(res.drop(columns="class_name"), m.drop(columns="class_name"),
                                  check_exact=False, rtol=1e-9)
    copy = ClassManifolds(10, 0.9)
    copy.load_state_dict(one.state_dict())
    pd.testing.assert_frame_equal(copy.result(), m)
    with pytest.raises(RobustlensError, match="max_features"):
        ClassManifolds(10, max_features=16).update({"pixels": x[:4]}, labels[:4])


def _sklearn_pca(x: np.ndarray, threshold: float) -> tuple[int, float]:
    """scikit-learn's components for ``threshold`` and the participation ratio of its spectrum."""
    pca = PCA(svd_solver="full").fit(x)
    ratios = np.cumsum(pca.explained_variance_ratio_)
    v = pca.explained_variance_
    return int(np.searchsorted(ratios, threshold, side="right")) + 1, v.sum() ** 2 / (v**2).sum()


@pytest.mark.parametrize("m", [5, 12, 40])  # m < D, m = D, m > D (D = 12; 40 > 2 D: covariance form)
def test_many_classes_equal_sklearn_per_class(m):
    g = torch.Generator().manual_seed(m)
    n_classes, d = 300, 12
    seen = torch.randperm(n_classes, generator=g)[:25]
    labels = seen.repeat_interleave(m)[torch.randperm(25 * m, generator=g)]
    scales = torch.rand(n_classes, d, generator=g) * 3 + 0.05
    x = (torch.randn(len(labels), d, generator=g) * scales[labels] + 5.0).float()
    whole, parts = ClassManifolds(n_classes, 0.9), [ClassManifolds(n_classes, 0.9) for _ in range(2)]
    for k, lo in enumerate(range(0, len(labels), 37)):
        whole.update({"f": x[lo:lo + 37]}, labels[lo:lo + 37])
        parts[k % 2].update({"f": x[lo:lo + 37]}, labels[lo:lo + 37])
    res = whole.result().set_index("class")
    assert sorted(res.index) == sorted(seen.tolist())
    for c in seen.tolist():
        xc = x[labels == c].double().numpy()
        dim, pr = _sklearn_pca(xc, 0.9)
        assert res.loc[c, "dimension"] == dim
        assert res.loc[c, "participation_ratio"] == pytest.approx(pr, rel=1e-8)
        assert res.loc[c, "total_variance"] == pytest.approx(xc.var(0, ddof=1).sum(), rel=1e-9)
        np.testing.assert_allclose(whole.covariance("f", c).numpy(), np.cov(xc, rowvar=False),
                                   atol=1e-9)
        sk = PCA(svd_solver="full").fit(xc).explained_variance_
        np.testing.assert_allclose(whole.variances("f", c).numpy()[:len(sk)], sk, atol=1e-9)
    merged = parts[1].merge(parts[0])
    pd.testing.assert_frame_equal(merged.result().set_index("class"), res, check_exact=False,
                                  rtol=1e-8)
    copy = ClassManifolds(n_classes, 0.9)
    copy.load_state_dict(merged.state_dict())
    pd.testing.assert_frame_equal(copy.result().set_index("class"), res, check_exact=False,
                                  rtol=1e-8)
    # merging a covariance-form reducer into a rows-form one and back
    copy.merge(whole)
    both = copy.result().set_index("class")
    assert (both["n_images"] == 2 * m).all()


def test_absent_classes_cost_nothing():
    g = torch.Generator().manual_seed(0)
    small, large = ClassManifolds(10), ClassManifolds(100_000)
    x, labels = torch.randn(6, 2048, generator=g), torch.tensor([0, 0, 0, 3, 3, 3])
    small.update({"f": x}, labels)
    large.update({"f": x}, labels)
    assert large.nbytes == small.nbytes == x.nbytes  # the float32 rows as seen, nothing else
    assert sum(t.nbytes for t in large.state_dict().values()) < x.nbytes + 1024
    assert ClassManifolds(100_000).nbytes == 0
    assert large.classes("f") == [0, 3]


def test_switches_to_covariance_form_when_smaller():
    g = torch.Generator().manual_seed(1)
    d = 4
    reducer = ClassManifolds(3)
    x = torch.randn(30, d, generator=g, dtype=torch.float64) + 100.0  # far from 0: stability
    for lo in range(0, 30, 3):
        reducer.update({"f": x[lo:lo + 3]}, torch.zeros(3, dtype=torch.long))
    assert reducer.nbytes == 8 * (d * d + d)  # 30 float64 rows of 4 > a 4 x 4 scatter + mean
    np.testing.assert_allclose(reducer.covariance("f", 0).numpy(), np.cov(x.numpy(), rowvar=False),
                               rtol=1e-9, atol=1e-12)
    state = reducer.state_dict()
    assert state["f|rows"].shape == (0, d) and state["f|scatter"].shape == (1, d, d)


def test_reads_the_dense_state_layout():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    n = torch.tensor([0.0, 8.0])
    s1 = torch.stack([torch.zeros(3), x.sum(0)])
    s2 = torch.stack([torch.zeros(3, 3), x.T @ x])
    reducer = ClassManifolds(2)
    reducer.load_state_dict({"f|n": n, "f|s1": s1, "f|s2": s2})
    np.testing.assert_allclose(reducer.covariance("f", 1).numpy(), np.cov(x.numpy(), rowvar=False),
                               atol=1e-12)
    assert reducer.classes("f") == [1]
