"""Correlations with p-values and bootstrap intervals, against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from robustlens.analysis import correlate, correlate_tables


def test_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = -0.7 * x + rng.normal(size=40)
    y[3] = np.nan  # dropped pairwise
    res = correlate(x, y, n_bootstrap=300, seed=1).set_index("method")
    ok = ~np.isnan(y)
    p = pearsonr(x[ok], y[ok])
    s = spearmanr(x[ok], y[ok])
    assert res.loc["pearson", "statistic"] == pytest.approx(p.statistic, abs=1e-12)
    assert res.loc["pearson", "p_value"] == pytest.approx(p.pvalue, rel=1e-9)
    assert res.loc["spearman", "statistic"] == pytest.approx(s.statistic, abs=1e-12)
    assert res.loc["spearman", "p_value"] == pytest.approx(s.pvalue, rel=1e-9)
    assert (res["n"] == 39).all()
    assert ((res["ci_low"] < res["statistic"]) & (res["statistic"] < res["ci_high"])).all()
    assert (res["ci_high"] < 0).all()
    pd.testing.assert_frame_equal(res.reset_index(),
                                  correlate(x, y, n_bootstrap=300, seed=1))  # seeded


def test_undefined_cases():
    res = correlate([1.0, 2.0], [3.0, 4.0], n_bootstrap=10)
    assert res["statistic"].isna().all() and res["ci_low"].isna().all()
    res = correlate([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], n_bootstrap=10)
    assert res["statistic"].isna().all()


def test_tables_grouped_by_model():
    dims = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "class": list(range(5)) * 2,
                         "dimension": [3, 5, 2, 8, 6, 1, 2, 3, 4, 5], "n_images": 10})
    acc = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 5, "class": list(range(5)) * 2,
                        "accuracy": [0.6, 0.4, 0.7, 0.1, 0.3, 0.9, 0.8, 0.7, 0.6, 0.5],
                        "n_images": 7})
    res = correlate_tables(dims, acc, "dimension", "accuracy", n_bootstrap=50)
    assert res[["model", "method"]].values.tolist() == [["a", "pearson"], ["a", "spearman"],
                                                         ["b", "pearson"], ["b", "spearman"]]
    b = res[(res["model"] == "b") & (res["method"] == "spearman")].iloc[0]
    assert b["statistic"] == pytest.approx(-1.0)
    a = res[(res["model"] == "a") & (res["method"] == "pearson")].iloc[0]
    assert a["statistic"] == pytest.approx(pearsonr([3, 5, 2, 8, 6],
                                                    [0.6, 0.4, 0.7, 0.1, 0.3]).statistic)


def test_group_columns_from_either_table():
    dims = pd.DataFrame({"layer": "fc", "class": range(4), "dimension": [1, 2, 3, 4]})
    acc = pd.DataFrame({"attack": ["pgd"] * 4 + ["fgsm"] * 4, "class": list(range(4)) * 2,
                        "accuracy": [0.9, 0.8, 0.3, 0.1, 0.1, 0.2, 0.3, 0.4]})
    res = correlate_tables(dims, acc, "dimension", "accuracy", by=["layer", "attack"],
                           n_bootstrap=10)
    spear = res[res["method"] == "spearman"].set_index("attack")["statistic"]
    assert spear["pgd"] == pytest.approx(-1.0) and spear["fgsm"] == pytest.approx(1.0)
    assert (res["layer"] == "fc").all()
