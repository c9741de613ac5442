"""PCA over channels against scikit-learn; clean-fitted images of adversarial activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from robustlens import create_model
from robustlens.activations import record
from robustlens.analysis import ActivationPCA, pca_images
from robustlens.errors import RobustlensError


@pytest.fixture(scope="module")
def maps(digits):
    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    x = digits.images[:4]
    with torch.no_grad(), record(model, "features.1") as rec:
        model(x)
        clean = rec["features.1"]
        model((x + 0.1 * torch.sign(torch.randn(x.shape))).clamp(0, 1))
        adv = rec["features.1"]
    return clean, adv  # (4, 8, 8, 8)


def test_matches_sklearn(maps):
    clean, _ = maps
    pca = ActivationPCA(3, quantile=0.0).fit(clean)
    rows = clean.double().permute(0, 2, 3, 1).reshape(-1, 8).numpy()
    ref = PCA(3, svd_solver="full").fit(rows)
    np.testing.assert_allclose(pca.explained_variance_ratio_.numpy(),
                               ref.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(pca.explained_variance_.numpy(), ref.explained_variance_, rtol=1e-8)
    signs = np.sign((pca.components_.numpy() * ref.components_).sum(1))
    np.testing.assert_allclose(pca.components_.numpy(), ref.components_ * signs[:, None],
                               atol=1e-8)
    proj = pca.transform(clean)
    assert proj.shape == (4, 3, 8, 8)
    expected = ref.transform(rows) * signs
    np.testing.assert_allclose(proj.permute(0, 2, 3, 1).reshape(-1, 3).numpy(), expected,
                               atol=1e-8)
    images = pca.to_images(proj)  # min / max scale: the extremes hit 0 and 1
    assert images.dtype == torch.float32
    assert torch.allclose(images.amin((0, 2, 3)), torch.zeros(3))
    assert torch.allclose(images.amax((0, 2, 3)), torch.ones(3))


def test_clean_vs_adversarial_images(maps):
    clean, adv = maps
    ci, ai = pca_images(clean, adv)
    assert ci.shape == ai.shape == (4, 3, 8, 8)
    assert 0 <= float(ai.min()) and float(ai.max()) <= 1
    assert not torch.equal(ci, ai)
    same_a, same_b = pca_images(clean, clean)
    torch.testing.assert_close(same_a, same_b)
    grey, _ = pca_images(clean[0], adv[0], n_components=1)  # one (C, H, W) map
    assert grey.shape == (1, 1, 8, 8)


def test_errors(maps):
    clean, _ = maps
    with pytest.raises(RobustlensError, match="not fitted"):
        ActivationPCA().transform(clean)
    with pytest.raises(RobustlensError, match="exceeds"):
        ActivationPCA(9).fit(clean)
    with pytest.raises(RobustlensError, match="no positions"):
        ActivationPCA().fit(torch.zeros(2, 5))
    with pytest.raises(RobustlensError, match="channels"):
        ActivationPCA().fit(clean).transform(clean[:, :4])


@pytest.mark.parametrize("shape", [(2, 64, 3, 3), (1, 40, 2, 2), (3, 16, 2, 1)])
def test_fewer_positions_than_channels_matches_sklearn(shape):
    """A deep layer's case (few positions, many channels): the Gram-matrix route."""
    g = torch.Generator().manual_seed(shape[1])
    a = torch.relu(torch.randn(shape, generator=g, dtype=torch.float64))
    pca = ActivationPCA(3, quantile=0.0).fit(a)
    rows = a.permute(0, 2, 3, 1).reshape(-1, shape[1]).numpy()
    assert rows.shape[0] < rows.shape[1]
    ref = PCA(3, svd_solver="full").fit(rows)
    np.testing.assert_allclose(pca.explained_variance_.numpy(), ref.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(pca.explained_variance_ratio_.numpy(), ref.explained_variance_ratio_,
                               rtol=1e-9)
    signs = np.sign((pca.components_.numpy() * ref.components_).sum(1))
    np.testing.assert_allclose(pca.components_.numpy(), ref.components_ * signs[:, None], atol=1e-9)
    comps = pca.components_.numpy()
    assert (comps[np.arange(3), np.abs(comps).argmax(1)] > 0).all()  # the deterministic sign


def test_rank_deficient_positions_still_give_unit_components():
    """3 positions of 10 channels span 2 directions: the third component has zero variance."""
    a = torch.zeros(1, 10, 3, 1, dtype=torch.float64)
    a[0, 0, :, 0] = torch.tensor([1.0, 2.0, 4.0])
    a[0, 3, :, 0] = torch.tensor([0.0, 1.0, 0.0])
    pca = ActivationPCA(3, quantile=0.0).fit(a)
    np.testing.assert_allclose(pca.components_.norm(dim=1).numpy(), np.ones(3), atol=1e-12)
    assert float(pca.explained_variance_[2]) == pytest.approx(0.0, abs=1e-12)
    ref = PCA(2, svd_solver="full").fit(a.permute(0, 2, 3, 1).reshape(-1, 10).numpy())
    np.testing.assert_allclose(pca.explained_variance_[:2].numpy(), ref.explained_variance_, rtol=1e-9)
