"""RDMs against scipy's pdist, RDM comparisons against scipy and hand formulas, bootstrap,
class-averaged RDMs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr, spearmanr

from robustlens.analysis import (
    RDM,
    ClassRDM,
    bootstrap_compare_rdms,
    compare_rdm_sets,
    compare_rdms,
    rdm,
)
from robustlens.errors import RobustlensError


def tau_a_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    pairs = list(itertools.combinations(range(len(x)), 2))
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return float(s) / len(pairs)


@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine"])
def test_rdm_matches_pdist(metric):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 40, generator=g, dtype=torch.float64) + 3.0
    r = rdm(x, metric)
    np.testing.assert_allclose(r.matrix, squareform(pdist(x.numpy(), metric)), atol=1e-12)
    r32 = rdm(x.float(), metric)  # float32 input: float32 Gram, still close
    np.testing.assert_allclose(r32.matrix, r.matrix, atol=1e-5, rtol=1e-5)
    assert np.allclose(r32.matrix, r32.matrix.T) and (np.diag(r32.matrix) == 0).all()


def test_rdm_descriptors_and_undefined_rows(digits):
    x = digits.images[:6].clone()
    x[2] = 0.5  # a constant pattern: correlation undefined
    r = rdm(x, descriptors={"layer": "pixels"}, stimulus_descriptors={"label": digits.labels[:6]})
    assert r.n_stimuli == 6 and r.descriptors == {"layer": "pixels"}
    assert np.isnan(r.matrix[2, [0, 1, 3]]).all() and r.matrix[2, 2] == 0
    df = r.to_frame()
    assert len(df) == 15 and {"layer", "label_i", "label_j", "measure"} <= set(df.columns)
    sub = r.subset([3, 0])
    assert sub.matrix[0, 1] == r.matrix[3, 0]
    assert sub.stimulus_descriptors["label"].tolist() == digits.labels[[3, 0]].tolist()
    with pytest.raises(RobustlensError, match="entries"):
        RDM(np.zeros((3, 3)), "euclidean", stimulus_descriptors={"label": [1, 2]})
    with pytest.raises(RobustlensError, match="square"):
        RDM(np.zeros((3, 2)), "euclidean")


def test_compare_against_scipy_and_hand_formulas():
    g = torch.Generator().manual_seed(1)
    a = rdm(torch.randn(9, 20, generator=g, dtype=torch.float64))
    b = rdm(torch.randn(9, 20, generator=g, dtype=torch.float64))
    va, vb = a.vector(), b.vector()
    assert compare_rdms(a, b, "pearson") == pytest.approx(pearsonr(va, vb).statistic, abs=1e-12)
    assert compare_rdms(a, b, "spearman") == pytest.approx(spearmanr(va, vb).statistic, abs=1e-12)
    assert compare_rdms(a, b, "kendall_tau_a") == pytest.approx(tau_a_by_hand(va, vb), abs=1e-12)
    cos = va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)
    assert compare_rdms(a, b, "cosine") == pytest.approx(cos, abs=1e-12)
    assert compare_rdms(a, a, "kendall_tau_a") == pytest.approx(1.0)
    with pytest.raises(RobustlensError, match="method"):
        compare_rdms(a, b, "kendall")  # type: ignore[arg-type]
    with pytest.raises(RobustlensError, match="different numbers"):
        compare_rdms(a, a.subset([0, 1, 2]))


def test_tau_a_with_ties_on_small_cases():
    # 6 entries = the upper triangle of a 4 x 4 RDM; ties on one side, both, or everywhere
    cases = [([1, 1, 2, 3, 3, 3], [2, 1, 1, 3, 4, 4]), ([0, 0, 0, 1, 1, 2], [1, 2, 3, 4, 4, 4]),
             ([5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6]), ([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])]
    n, iu = 4, np.triu_indices(4, 1)
    for x, y in cases:
        a, b = np.zeros((n, n)), np.zeros((n, n))
        a[iu], b[iu] = x, y
        ra, rb = RDM(a + a.T, "euclidean"), RDM(b + b.T, "euclidean")
        expected = tau_a_by_hand(np.array(x, float), np.array(y, float))
        assert compare_rdms(ra, rb, "kendall_tau_a") == pytest.approx(expected, abs=1e-12)
    # the first case by hand: 15 pairs, 9 concordant, 1 discordant, 5 tied
    assert tau_a_by_hand(np.array([1, 1, 2, 3, 3, 3.0]), np.array([2, 1, 1, 3, 4, 4.0])) \
        == pytest.approx(8 / 15)


def test_bootstrap_interval():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(20, 30, generator=g, dtype=torch.float64)
    a = rdm(base)
    b = rdm(base + 0.8 * torch.randn(20, 30, generator=g, dtype=torch.float64))
    est = bootstrap_compare_rdms(a, b, "spearman", n_bootstrap=200, seed=3)
    assert est.estimate == pytest.approx(compare_rdms(a, b, "spearman"))
    assert est.low < est.estimate < est.high and est.std > 0
    again = bootstrap_compare_rdms(a, b, "spearman", n_bootstrap=200, seed=3)
    np.testing.assert_array_equal(est.samples, again.samples)
    # one resample by hand: pairs of different draws only
    rng = np.random.default_rng(3)
    draw = rng.integers(0, 20, size=20)
    i, j = np.triu_indices(20, 1)
    keep = draw[i] != draw[j]
    x = a.matrix[draw[i][keep], draw[j][keep]]
    y = b.matrix[draw[i][keep], draw[j][keep]]
    assert est.samples[0] == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


def test_class_rdm_streaming(digits):
    x, labels = digits.images[:300], digits.labels[:300]
    one = ClassRDM(10, "euclidean", class_names=digits.class_names)
    parts = [ClassRDM(10, "euclidean") for _ in range(3)]
    for k, lo in enumerate(range(0, 300, 64)):
        batch = {"pixels": x[lo:lo + 64], "flat": x[lo:lo + 64].flatten(1)}
        one.update(batch, labels[lo:lo + 64])
        parts[k % 3].update(batch, labels[lo:lo + 64])
    merged = parts[0].merge(parts[1]).merge(parts[2])
    means = np.stack([x[labels == c].flatten(1).double().mean(0).numpy() for c in range(10)])
    expected = squareform(pdist(means))
    np.testing.assert_allclose(one.rdm("pixels").matrix, expected, atol=1e-10)
    np.testing.assert_allclose(merged.rdm("flat").matrix, expected, atol=1e-10)
    assert one.rdm("pixels").stimulus_descriptors["class_name"][3] == "3"
    table = one.result()
    assert len(table) == 2 * 45 and set(table["measure"]) == {"euclidean"}
    copy = ClassRDM(10, "euclidean")
    copy.load_state_dict(one.state_dict())
    np.testing.assert_allclose(copy.rdm("pixels").matrix, expected, atol=1e-10)
    sets = compare_rdm_sets(one.rdms(), merged.rdms(), "pearson")
    assert len(sets) == 4 and np.allclose(sets["similarity"], 1.0)
    partial = ClassRDM(10)
    partial.update({"p": x[labels < 3]}, labels[labels < 3])
    assert partial.rdm("p").n_stimuli == 3  # classes never seen are left out
    with pytest.raises(RobustlensError, match="labels must lie"):
        partial.update({"p": x[:2]}, torch.tensor([0, 10]))
    assert math.isnan(compare_rdms(RDM(np.zeros((3, 3)), "x"), RDM(np.ones((3, 3)), "x")))


def test_class_rdm_absent_classes_cost_nothing_and_dense_state_loads(digits):
    x, labels = digits.images[:200].flatten(1), digits.labels[:200]
    keep = labels < 4
    wide = ClassRDM(100_000, "correlation")  # a huge label space; four classes seen
    wide.update({"p": x[keep]}, labels[keep] + 5000)
    assert wide.nbytes == 4 * 64 * 8  # one float64 sum per class seen
    assert wide.class_means("p")[0].tolist() == [5000, 5001, 5002, 5003]
    small = ClassRDM(10, "correlation")
    small.update({"p": x[keep]}, labels[keep])
    np.testing.assert_allclose(wide.rdm("p").matrix, small.rdm("p").matrix, atol=1e-12)
    dense = {"p|counts": torch.bincount(labels[keep], minlength=10).double(),
             "p|sums": torch.zeros(10, 64, dtype=torch.float64).index_add_(0, labels[keep],
                                                                           x[keep].double())}
    loaded = ClassRDM(10, "correlation")
    loaded.load_state_dict(dense)
    np.testing.assert_allclose(loaded.rdm("p").matrix, small.rdm("p").matrix, atol=1e-12)
    again = ClassRDM(100_000, "correlation")
    again.load_state_dict(wide.state_dict())
    again.merge(wide)
    np.testing.assert_allclose(again.rdm("p").matrix, small.rdm("p").matrix, atol=1e-12)


def _bootstrap_by_definition(a: RDM, b: RDM, method: str, n_bootstrap: int, seed: int) -> np.ndarray:
    """Each resample's pairs of different draws written out and compared with scipy."""
    rng = np.random.default_rng(seed)
    n = a.n_stimuli
    i, j = np.triu_indices(n, 1)
    out = []
    for _ in range(n_bootstrap):
        draw = rng.integers(0, n, size=n)
        keep = draw[i] != draw[j]
        x = a.matrix[draw[i][keep], draw[j][keep]]
        y = b.matrix[draw[i][keep], draw[j][keep]]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if method == "spearman":
            out.append(spearmanr(x, y).statistic)
        elif method == "pearson":
            out.append(np.corrcoef(x, y)[0, 1])
        else:
            out.append(x @ y / np.sqrt((x @ x) * (y @ y)))
    return np.asarray(out)


@pytest.mark.parametrize("method", ["spearman", "pearson", "cosine"])
def test_bootstrap_weighted_form_equals_resampling(digits, method):
    # real data with ties (rounded dissimilarities) and undefined entries (NaN)
    x = torch.as_tensor(digits.images[:25].reshape(25, -1), dtype=torch.float64)
    a = rdm(x, "euclidean")
    b = rdm(x.flip(1) + 0.5 * torch.roll(x, 1, 0), "cosine")
    am, bm = np.round(a.matrix, 0), b.matrix.copy()
    bm[3, :] = bm[:, 3] = np.nan
    np.fill_diagonal(bm, 0.0)
    tied, undefined = RDM(am, "euclidean"), RDM(bm, "cosine")
    plain = rdm(x + 0.1 * torch.roll(x, 2, 1), "euclidean")  # no ties, nothing undefined
    for one, two in [(tied, undefined), (undefined, tied), (plain, tied), (a, plain)]:
        est = bootstrap_compare_rdms(one, two, method, n_bootstrap=40, seed=5)
        expected = _bootstrap_by_definition(one, two, method, 40, 5)
        np.testing.assert_allclose(est.samples, expected, rtol=0, atol=1e-12)
    assert len(np.unique(am)) < am.size // 4  # the ties are real


def test_bootstrap_degenerate_resamples():
    # 3 stimuli: a resample drawing one stimulus has no pair, one drawing two has one value
    # (repeated): the correlation is undefined (NaN) in both, as by definition
    m = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0.0]])
    a, b = RDM(m, "euclidean"), RDM(m ** 2, "euclidean")
    est = bootstrap_compare_rdms(a, b, "pearson", n_bootstrap=60, seed=1)
    rng = np.random.default_rng(1)
    distinct = np.array([len(np.unique(rng.integers(0, 3, size=3))) for _ in range(60)])
    np.testing.assert_array_equal(np.isnan(est.samples), distinct < 3)
    assert np.isnan(est.samples).any() and not np.isnan(est.samples).all()
    full = est.samples[distinct == 3]  # all three drawn: the weighted Pearson r
    i, j = np.triu_indices(3, 1)
    rng = np.random.default_rng(1)
    for s in range(60):
        c = np.bincount(rng.integers(0, 3, size=3), minlength=3)
        if (c > 0).all():
            x = np.repeat(m[i, j], c[i] * c[j])
            assert est.samples[s] == pytest.approx(np.corrcoef(x, x ** 2)[0, 1], abs=1e-12)
    assert len(full) > 0
