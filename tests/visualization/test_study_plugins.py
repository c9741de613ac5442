"""The featurevis and saliency plug-ins in a tiny two-model study, end to end."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from robustlens.errors import ConfigError
from robustlens.study import parse_config
from robustlens.study.analyses import ANALYSES
from robustlens.study.runner import run_study
from robustlens.visualization.tables import pixel_rows, rows_to_image

CONFIG = """
[study]
name = "looking"
batch_size = 50
[data]
dataset = "digits"
n_per_class = 3
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
eps = [0.05, 0.2]
[analyses.featurevis]
layers = "features.*"
top_k = 2
steps = 24
[analyses.saliency]
methods = ["gradient", "smoothgrad"]
n_images = 2
n_samples = 4
"""


def test_plugins_in_a_study(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(CONFIG))
    run_study(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    res = tmp_path / "run" / "results"
    fv = pd.read_parquet(res / "featurevis.parquet")
    assert set(fv["model"]) == {"a", "b"} and set(fv["rank"]) == {1, 2}
    assert set(fv["eps"]) == {0.2}
    one = fv[(fv["model"] == "a") & (fv["rank"] == 1)]
    assert rows_to_image(one).shape == (1, 8, 8)
    sal = pd.read_parquet(res / "saliency.parquet")
    assert set(sal["method"]) == {"input", "gradient", "smoothgrad"}
    assert set(sal["attack"]) == {"clean", "fgsm"} and sal["value"].between(0, 1).all()
    figures = list((tmp_path / "run" / "figures").glob("*.png"))
    assert any("sensitive" in f.name.lower() for f in figures)
    assert any("saliency" in f.name.lower() for f in figures)
    tables = {"featurevis": fv, "saliency": sal}
    assert len(ANALYSES["featurevis"].figures(tables)) == 1
    assert len(ANALYSES["saliency"].figures(tables)) == 1


def test_bad_options() -> None:
    from robustlens.models import create_model

    model = create_model("digits_cnn")
    with pytest.raises(ConfigError, match="methods"):
        ANALYSES["saliency"]("m", model, [str(i) for i in range(10)], methods=["magic"])
    with pytest.raises(ConfigError, match="sigma"):
        ANALYSES["saliency"]("m", model, [str(i) for i in range(10)], sigma=-1)
    with pytest.raises(ConfigError, match="top_k"):
        ANALYSES["featurevis"]("m", model, [str(i) for i in range(10)], top_k=0)


def test_pixel_rows_round_trip() -> None:
    import torch

    x = torch.rand(3, 4, 5)
    torch.testing.assert_close(rows_to_image(pixel_rows(x, model="m")), x)
