"""S2's slides: the top-k sensitive channels per layer and per eps, and their renders on a grid
(rows eps or layer, the models side by side)."""

from __future__ import annotations

import tomllib
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.errors import ConfigError
from robustlens.study import parse_config
from robustlens.study.analyses import ANALYSES
from robustlens.study.analyses.contract import AnalysisBatch, CleanBatch
from robustlens.study.runner import run_study


def _model() -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 1), relu=nn.ReLU(), flat=nn.Flatten(),
                                     fc=nn.Linear(6, 4)))


def _batch(eps: float, conv: list, fc: list, labels: list | None = None) -> AnalysisBatch:
    """Clean activations all 0, so the adversarial ones are the absolute changes."""
    conv_t, fc_t = torch.tensor(conv, dtype=torch.float32), torch.tensor(fc, dtype=torch.float32)
    n = conv_t.shape[0]
    y = torch.zeros(n, dtype=torch.long) if labels is None else torch.tensor(labels)
    clean = CleanBatch(torch.zeros(n, 1, 1, 2), y, torch.zeros(n, 4),
                       {"conv": torch.zeros_like(conv_t), "fc": torch.zeros_like(fc_t)})
    return AnalysisBatch("fgsm", eps, clean, clean.images, clean.logits, {"conv": -conv_t, "fc": fc_t})


def test_top_k_per_layer_and_per_eps_matches_a_hand_computation() -> None:
    analysis = ANALYSES["sensitivity"]("m", _model(), [str(k) for k in range(4)], top_k=2, layers=["conv", "fc"])
    # conv: (B=2, C=3, H=1, W=2); fc: (B=2, D=4); two batches per eps, eps 0 ignored
    analysis.update(_batch(0.0, [[[[9, 9]], [[9, 9]], [[9, 9]]]] * 2, [[9, 9, 9, 9]] * 2))
    analysis.update(_batch(0.1, [[[[1, 3]], [[0, 0]], [[4, 4]]], [[[3, 1]], [[2, 0]], [[0, 0]]]],
                           [[1, 0, 0, 2], [3, 0, 1, 2]]))
    analysis.update(_batch(0.1, [[[[2, 2]], [[8, 0]], [[0, 0]]]], [[2, 0, 5, 2]]))
    analysis.update(_batch(0.2, [[[[0, 0]], [[6, 6]], [[5, 3]]], [[[0, 2]], [[6, 6]], [[1, 1]]]],
                           [[0, 7, 1, 1], [0, 5, 1, 3]]))
    top = analysis.tables()["sensitivity_top"]
    per_layer = top[top["scope"] == "per_layer"]
    # by hand, sigma = mean over the 3 (eps 0.1) or 2 (eps 0.2) images of the channel's mean |change|:
    # eps 0.1, conv: c0 (2 + 2 + 2) / 3 = 2, c1 (0 + 1 + 4) / 3 = 5/3, c2 (4 + 0 + 0) / 3 = 4/3
    #          fc:   d0 (1 + 3 + 2) / 3 = 2, d1 0, d2 (0 + 1 + 5) / 3 = 2, d3 2   (ties keep channel order)
    # eps 0.2, conv: c0 (0 + 1) / 2 = 1/2, c1 6, c2 (4 + 1) / 2 = 5/2
    #          fc:   d0 0, d1 6, d2 1, d3 2
    expected = {(0.1, "conv"): [("conv#0", 2.0), ("conv#1", 5 / 3)],
                (0.1, "fc"): [("fc#0", 2.0), ("fc#2", 2.0)],
                (0.2, "conv"): [("conv#1", 6.0), ("conv#2", 2.5)],
                (0.2, "fc"): [("fc#1", 6.0), ("fc#3", 2.0)]}
    got = {(eps, layer): list(zip(g["unit"], g["sensitivity"], strict=True))
           for (eps, layer), g in per_layer.groupby(["eps", "layer"])}
    assert got.keys() == expected.keys()
    for key, rows in expected.items():
        assert [u for u, _ in got[key]] == [u for u, _ in rows], key
        assert [s for _, s in got[key]] == pytest.approx([s for _, s in rows]), key
    assert list(per_layer["rank"]) == [1, 2] * 4 and (per_layer["n_images"] == [3] * 4 + [2] * 4).all()
    overall = top[top["scope"] == "overall"]
    assert list(overall[overall["eps"] == 0.2]["unit"]) == ["conv#1", "fc#1"]


def test_class_filter_and_neurons_from_the_config() -> None:
    names = ["tench", "flamingo", "goose", "owl"]
    images = [[[[1, 3]], [[0, 0]], [[4, 4]]], [[[3, 1]], [[2, 0]], [[0, 0]]], [[[2, 2]], [[8, 0]], [[0, 0]]]]
    fc = [[1, 0, 0, 2], [3, 0, 1, 2], [2, 0, 5, 2]]
    labels = [1, 3, 1]
    flamingos = ANALYSES["sensitivity"]("m", _model(), names, layers=["conv", "fc"], classes=["flamingo"],
                                        neurons=2)
    flamingos.update(_batch(0.1, images, fc, labels))
    by_hand = ANALYSES["sensitivity"]("m", _model(), names, layers=["conv", "fc"])  # the flamingos only
    by_hand.update(_batch(0.1, [images[0], images[2]], [fc[0], fc[2]]))
    got, want = flamingos.tables(), by_hand.tables()
    for table in ("sensitivity", "sensitivity_layers", "sensitivity_top"):
        pd.testing.assert_frame_equal(got[table], want[table])
    assert (got["sensitivity"]["n_images"] == 2).all()
    neurons = got["sensitivity_neurons"]
    # |change| per neuron averaged over the 2 flamingos, by hand: conv (channel, x) (0, 0) 1.5,
    # (0, 1) 2.5, (1, 0) 4, (1, 1) 0, (2, 0) 2, (2, 1) 2; fc 1.5, 0, 2.5, 2
    conv = neurons[neurons["layer"] == "conv"]
    assert list(zip(conv["channel"], conv["position"], conv["sensitivity"], strict=True)) == [(1, 0, 4.0), (0, 1, 2.5)]
    fc_rows = neurons[neurons["layer"] == "fc"]
    assert list(fc_rows["neuron"]) == [2, 3] and list(fc_rows["sensitivity"]) == [2.5, 2.0]
    with pytest.raises(ConfigError, match=r"unknown class name 'flamingos'.*Did you mean 'flamingo'"):
        ANALYSES["sensitivity"]("m", _model(), names, classes=["flamingos"])
    with pytest.raises(ConfigError, match="classes must be a list of class names or indices"):
        parse_config({"models": [{"name": "m", "architecture": "digits_cnn", "random": True}],
                      "analyses": {"sensitivity": {"classes": [1.5]}}})


GRID = """
[study]
name = "grid"
batch_size = 50
[data]
dataset = "digits"
n_per_class = 3
[[models]]
name = "robust"
architecture = "digits_cnn"
random = true
[[models]]
name = "standard"
architecture = "digits_cnn"
random = true
seed = 1
[[attacks]]
type = "fgsm"
eps = [0.0, 0.1, 0.3]
[analyses.featurevis]
layers = ["features.1", "features.4"]
top_k = 2
steps = 3
per_eps = true
per_layer = true
"""


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "run"
    run_study(parse_config(tomllib.loads(GRID)), out, cache_dir=out.parent / "cache")
    return out


def test_renders_per_layer_and_per_eps_in_a_study(grid_run: Path) -> None:
    fv = pd.read_parquet(grid_run / "results" / "featurevis.parquet")
    units = fv.drop_duplicates(["model", "eps", "layer", "rank"])
    # 2 models x 2 eps (eps 0 is no attack) x 2 layers x top 2
    assert len(units) == 16 and set(units["eps"]) == {0.1, 0.3} and (units["scope"] == "per_layer").all()
    assert set(units["layer"]) == {"features.1", "features.4"}
    assert (units.groupby(["model", "eps", "layer"])["rank"].apply(list) == pd.Series([[1, 2]] * 8).values).all()
    assert all(u.startswith(f"{layer}#") for u, layer in zip(units["unit"], units["layer"], strict=True))
    # the ranking is the sensitivity analysis' own: each layer's top channels at each eps, decreasing
    assert (units.groupby(["model", "eps", "layer"])["sensitivity"].apply(lambda s: s.is_monotonic_decreasing)).all()
    # one render per channel: a channel ranked at both eps has the same image
    pix = fv.set_index(["model", "eps", "unit", "channel", "y", "x"])["value"].sort_index()
    both = [(model, unit) for (model, unit), g in units.groupby(["model", "unit"]) if g["eps"].nunique() == 2]
    assert both
    for model, unit in both:
        assert pix.loc[(model, 0.1, unit)].equals(pix.loc[(model, 0.3, unit)])


def test_the_grid_figure_puts_the_models_side_by_side(grid_run: Path) -> None:
    fv = pd.read_parquet(grid_run / "results" / "featurevis.parquet")
    figures = ANALYSES["featurevis"].figures({"featurevis": fv})
    assert [t for t, _ in figures] == [
        f"Most sensitive channels of {layer} under fgsm at each eps, rendered (columns: models)"
        for layer in ("features.1", "features.4")]
    fig = figures[0][1]
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["robust", "standard"]
    axes = fig.subfigs[0].axes
    assert len(axes) == 2 * 2 and [ax.get_ylabel() for ax in axes[::2]] == ["eps=0.1", "eps=0.3"]
    assert all(ax.get_title().split(". ")[1].startswith("features.1#") for ax in fig.axes)
    # one eps: rows are layers; a single eps and no per_layer: the row-per-model figure
    one = fv[fv["eps"] == 0.3]
    (title, fig), = ANALYSES["featurevis"].figures({"featurevis": one})
    assert "of each layer" in title and [ax.get_ylabel() for ax in fig.subfigs[0].axes[::2]] == [
        "features.1", "features.4"]
    html = (grid_run / "report.html").read_text()
    assert "Most sensitive channels of features.4 under fgsm at each eps" in html


@pytest.mark.parametrize(("key", "value"), [("per_eps", 1), ("per_layer", "yes")])
def test_flags_must_be_booleans(key: str, value: object) -> None:
    raw = tomllib.loads(GRID)
    raw["analyses"]["featurevis"][key] = value
    with pytest.raises(ConfigError, match=rf"\[analyses.featurevis\].{key} must be true or false"):
        parse_config(raw)
