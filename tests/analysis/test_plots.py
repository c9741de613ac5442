"""Every figure builds from real analysis outputs and returns a Figure it does not show."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from robustlens.analysis import (
    ChannelSensitivity,
    ClassRDM,
    LayerDissimilarity,
    compare_rdm_sets,
    correlate_tables,
    pca_images,
    plots,
    top_k_channels,
)
from robustlens.errors import RobustlensError


def pair(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    clean = {"a": torch.randn(6, 4, 3, 3, generator=g), "b": torch.randn(6, 5, generator=g)}
    return clean, {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in clean.items()}


def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    dis, sens, layers = [], [], []
    for model in ("robust", "standard"):
        for eps in (0.1, 0.2):
            d, s = LayerDissimilarity(), ChannelSensitivity()
            d.update(*pair(int(eps * 10))), s.update(*pair(3))
            for out, df in ((dis, d.result()), (sens, s.result()), (layers, s.layer_result())):
                out.append(df.assign(model=model, eps=eps))
    return pd.concat(dis), pd.concat(sens), pd.concat(layers)


def test_figures_build(tmp_path, digits):
    dis, sens, layer_sens = frames()
    figs = [plots.plot_layer_dissimilarity(dis), plots.plot_layer_sensitivity(layer_sens),
            plots.plot_layer_dissimilarity(dis, relative_depth=True, panel=None, error=None)]
    top = top_k_channels(sens[sens["eps"] == 0.2], 3)
    figs.append(plots.plot_top_sensitivity(top))
    crdm = ClassRDM(10, class_names=digits.class_names)
    crdm.update({"pixels": digits.images[:200], "rows": digits.images[:200].mean(3)},
                digits.labels[:200])
    figs.append(plots.plot_rdm(crdm.rdm("pixels"), labels="class_name"))
    figs.append(plots.plot_rdm_similarity(compare_rdm_sets(crdm.rdms(), crdm.rdms())))
    dims = pd.DataFrame({"model": ["m"] * 5, "class": range(5), "dimension": [1, 3, 2, 5, 4]})
    acc = pd.DataFrame({"model": ["m"] * 5, "class": range(5), "accuracy": [.9, .5, .7, .2, .4]})
    corr = correlate_tables(dims, acc, "dimension", "accuracy", n_bootstrap=20)
    figs.append(plots.plot_manifold_accuracy(dims.merge(acc), correlations=corr))
    figs.append(plots.plot_manifold_dimensions(pd.concat([dims, dims.assign(model="n")])))
    clean, adv = pair(4)
    ci, ai = pca_images(clean["a"], adv["a"])
    figs.append(plots.plot_pca_images(ci, ai, row_labels=[f"img{i}" for i in range(6)],
                                      inputs=(digits.images[:6], digits.images[:6])))
    layers = [ci[0], ci[1, :1, :2]]  # rows of different sizes
    figs.append(plots.plot_pca_images(layers, [ai[0], ai[1, :1, :2]]))
    for i, fig in enumerate(figs):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / f"{i}.png", dpi=40)
        assert (tmp_path / f"{i}.png").stat().st_size > 0


def test_figure_input_errors():
    with pytest.raises(RobustlensError, match="lacks"):
        plots.plot_layer_dissimilarity(pd.DataFrame({"layer": ["a"]}))
    with pytest.raises(RobustlensError, match="differ in shape"):
        plots.plot_pca_images(torch.zeros(1, 3, 2, 2), torch.zeros(2, 3, 2, 2))


def test_figures_stay_readable_at_1000_classes(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for model, shift in (("resnet50", 40), ("alexnet", 25)):
        dims = (torch.randn(1000, generator=g) * 5 + shift).round().int().tolist()
        rows.append(pd.DataFrame({"model": model, "class": range(1000), "dimension": dims,
                                  "class_name": [f"class {c}" for c in range(1000)]}))
    table = pd.concat(rows)
    fig = plots.plot_manifold_dimensions(table)
    hist_ax, rank_ax = fig.axes
    assert len(hist_ax.patches) == 2  # one step histogram per model, not one bar per class
    named = [t.get_text() for t in rank_ax.texts]
    assert len(named) == 2 * 6  # the 3 lowest and 3 highest classes of each model
    lowest = table[table["model"] == "resnet50"].sort_values("dimension", kind="stable")
    assert lowest["class_name"].iloc[0] in named
    crdm = ClassRDM(1000, class_names=[f"c{c}" for c in range(1000)])
    crdm.update({"f": torch.randn(2000, 8, generator=g)}, torch.arange(1000).repeat(2))
    rdm_fig = plots.plot_rdm(crdm.rdm("f"), labels="class_name")
    assert len(rdm_fig.axes[0].get_xticklabels()) <= 40
    for i, f in enumerate((fig, rdm_fig)):
        f.savefig(tmp_path / f"{i}.png", dpi=40)
