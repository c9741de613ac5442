"""The looking-inside plug-ins (sensitivity, rsa, manifolds, pca_images,
dissimilarity_channels) in a tiny study, end to end."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustlens.errors import ConfigError
from robustlens.study import parse_config
from robustlens.study.analyses import ANALYSES
from robustlens.study.runner import run_study

CONFIG = """
[study]
name = "inside"
batch_size = 50
[data]
dataset = "digits"
n_per_class = 5
[[models]]
name = "a"
architecture = "digits_cnn"
random = true
[[models]]
name = "b"
architecture = "digits_cnn"
random = true
seed = 1
[[attacks]]
type = "fgsm"
eps = [0.05, 0.3]
[analyses.sensitivity]
top_k = 5
[analyses.rsa]
layers = ["features.*", "classifier.1"]
n_bootstrap = 20
[analyses.manifolds]
n_bootstrap = 20
[analyses.pca_images]
layers = "type:ReLU"
[analyses.dissimilarity_channels]
metric = "cosine"
"""


def test_plugins_in_a_study(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(CONFIG))
    run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    res = tmp_path / "run" / "results"
    read = {p.stem: pd.read_parquet(p) for p in res.glob("*.parquet")}
    sens = read["sensitivity_layers"]
    assert set(sens["model"]) == {"a", "b"} and set(sens["eps"]) == {0.05, 0.3}
    a = sens[(sens["model"] == "a")].pivot(index="layer", columns="eps", values="sensitivity")
    assert (a[0.3] > a[0.05]).all()  # a larger perturbation changes every layer more
    top = read["sensitivity_top"]
    assert (top[top["scope"] == "overall"].groupby(["model", "eps"]).size() == 5).all()
    assert set(read["rsa_clean_vs_adversarial"]["layer"]) == {
        "features.0", "features.1", "features.2", "features.3", "features.4", "features.5",
        "classifier.1"}
    assert len(read["rdm"][(read["rdm"]["model"] == "a") & (read["rdm"]["attack"] == "clean")]) \
        == 7 * 45
    man = read["manifolds"]
    assert set(man["layer"]) == {"classifier.1"} and (man["n_images"] == 5).all()
    assert ((man["dimension"] >= 1) & (man["dimension"] <= 4)).all()
    corr = read["manifold_correlation"]
    assert set(corr["method"]) == {"pearson", "spearman"} and set(corr["attack"]) >= {"fgsm"}
    acc = read["manifold_accuracy"]
    clean = acc[(acc["attack"] == "clean") & (acc["model"] == "a")]
    assert len(clean) == 10 and np.isfinite(clean["accuracy"]).all()
    pix = read["pca_images"]
    assert set(pix["layer"]) == {"input", "features.1", "features.4"}
    assert pix["value"].between(0, 1).all()
    assert set(read["dissimilarity_by_metric"]["metric"]) == {"cosine"}
    assert len(read["dissimilarity_channels"]) > 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Sensitive channels" in html and "Class activation manifolds" in html
    assert html.count("data:image/png;base64,") >= 12


def test_bad_option_values_fail_when_the_config_is_read() -> None:
    base = tomllib.loads(CONFIG)
    for name, options, match in [("rsa", {"metric": "manhattan"}, r"\[analyses.rsa\].metric must be one of"),
                                 ("manifolds", {"threshold": 2.0}, r"\[analyses.manifolds\].threshold"),
                                 ("pca_images", {"n_images": 0}, r"\[analyses.pca_images\].n_images"),
                                 ("dissimilarity", {"layers": 3}, r"\[analyses.dissimilarity\].layers")]:
        with pytest.raises(ConfigError, match=match):
            parse_config({**base, "analyses": {name: options}})


def test_unknown_layers_fail_when_the_analysis_is_built() -> None:
    from robustlens import create_model

    config = parse_config({**tomllib.loads(CONFIG), "analyses": {"sensitivity": {"layers": "nope.*"}}})
    with pytest.raises(ConfigError, match="matches no layer"):
        ANALYSES["sensitivity"]("a", create_model("digits_cnn"), [str(i) for i in range(10)],
                                config.analysis_options["sensitivity"])
