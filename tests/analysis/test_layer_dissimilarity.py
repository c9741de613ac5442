"""Clean-vs-adversarial dissimilarity against scipy, and reducer merging."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr, sem

from robustlens.analysis import LayerDissimilarity, pearson_dissimilarity
from robustlens.analysis.dissimilarity import ImageDissimilarity, flag_layers
from robustlens.errors import RobustlensError


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


def test_zero_counts_and_old_states() -> None:
    a = {"same": torch.randn(4, 6), "moved": torch.randn(4, 6)}
    b = {"same": a["same"].clone(), "moved": a["moved"] + torch.randn(4, 6)}
    b["moved"][0] = 3 * a["moved"][0] - 1  # exactly affine: r = 1
    red = LayerDissimilarity()
    red.update(a, b)
    table = flag_layers(red.result()).set_index("layer")
    assert table.loc["same", "n_zero"] == 4 and table.loc["same", "flag"] == "zero"
    assert table.loc["moved", "flag"] == "" and table.loc["moved", "n_zero"] == 1
    old = {k: v[..., :4] for k, v in red.state_dict().items()}  # a state without the n_zero column
    copy = LayerDissimilarity()
    copy.load_state_dict(old)
    assert (copy.result()["n_zero"] == 0).all()
    np.testing.assert_allclose(copy.result()["mean"], red.result()["mean"])


def test_image_dissimilarity_values_flags_and_streaming() -> None:
    batches = list(_batches(2, 4))  # 4 batches of 5 images; image 0 of each has an all-zero l2
    for a, b in batches:
        a["copy"] = a["l1"][:, :3].clone()
        b["copy"] = a["copy"].clone()  # the perturbation never reaches this layer
        a["affine"] = a["l1"].clone()
        b["affine"] = 2 * a["l1"] + 1
        b["l1"][1] = 1.0  # a constant adversarial activation
    one = ImageDissimilarity(n_images=12)
    for k, (a, b) in enumerate(batches):
        one.update(a, b, offset=5 * k)
    table = one.result()
    assert list(table.columns) == ["image", "layer", "layer_index", "dissimilarity", "flag", "reason"]
    assert sorted(table["image"].unique()) == list(range(12))  # bounded: only the first 12 images
    assert len(table) == 12 * 4
    row = table.set_index(["image", "layer"])
    for k in range(12):
        a, b = batches[k // 5]
        i = k % 5
        if i != 1:
            r = pearsonr(a["l1"][i].double().numpy(), b["l1"][i].double().numpy())[0]
            assert row.loc[(k, "l1"), "dissimilarity"] == pytest.approx(1 - r, abs=1e-12)
        assert row.loc[(k, "copy"), "flag"] == "zero_identical"
        assert row.loc[(k, "affine"), "flag"] == "zero_affine"
        assert row.loc[(k, "copy"), "dissimilarity"] == 0.0
    assert row.loc[(0, "l2"), "flag"] == "undefined_both" and math.isnan(row.loc[(0, "l2"), "dissimilarity"])
    assert row.loc[(1, "l1"), "flag"] == "undefined_adversarial" and "constant" in row.loc[(1, "l1"), "reason"]
    assert row.loc[(2, "l1"), "flag"] == "" and row.loc[(2, "l1"), "reason"] == ""
    # batches in another order, split between two reducers, merged: the same table
    parts = [ImageDissimilarity(n_images=12), ImageDissimilarity(n_images=12)]
    for k in (3, 1, 2, 0):
        parts[k % 2].update(*batches[k], offset=5 * k)
    pd.testing.assert_frame_equal(parts[0].merge(parts[1]).result(), table)
    copy = ImageDissimilarity(n_images=12)
    copy.load_state_dict(one.state_dict())
    pd.testing.assert_frame_equal(copy.result(), table)
    with pytest.raises(RobustlensError, match="n_images"):
        ImageDissimilarity(n_images=0)


def test_image_dissimilarity_on_a_trained_cnn_matches_the_layer_means(digits_model, digits_test) -> None:
    from robustlens.activations import record
    from robustlens.attacks import FGSM

    x, y = digits_test.images[:40], digits_test.labels[:40]
    adv = FGSM(eps=0.1)(digits_model, x, y)
    layers = ["features.0", "features.1", "classifier.1"]
    with torch.no_grad(), record(digits_model, layers) as clean:
        digits_model(x)
    with torch.no_grad(), record(digits_model, layers) as perturbed:
        digits_model(adv)
    images, means = ImageDissimilarity(n_images=40), LayerDissimilarity()
    images.update(dict(clean), dict(perturbed))
    means.update(dict(clean), dict(perturbed))
    per_layer = images.result().groupby("layer")["dissimilarity"].mean()
    expected = means.result().set_index("layer")["mean"]
    np.testing.assert_allclose(per_layer.loc[expected.index], expected, rtol=1e-10)


def test_depth_figures_put_models_on_one_axis_and_mark_flags() -> None:
    from robustlens.analysis.depth_plots import plot_dissimilarity_over_depth, plot_image_dissimilarity

    rows = []
    for model, n_layers in (("resnet", 9), ("vone", 5)):
        for i in range(n_layers):
            rows.append({"model": model, "layer": f"l{i}", "layer_index": i, "n_images": 4 if i != 2 else 0,
                         "mean": 0.1 * i if i != 2 else math.nan, "std": 0.01, "sem": 0.005,
                         "n_undefined": 4 if i == 2 else 0, "n_zero": 4 if i == 1 else 0})
    fig = plot_dissimilarity_over_depth(pd.DataFrame(rows))
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 2  # both models on one axis
    for line in lines:
        x = line.get_xdata()
        assert x[0] == 0.0 and x[-1] == 1.0  # relative depth
    from matplotlib.collections import PathCollection

    # per model: one undefined cross, one zero circle
    markers = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(markers) == 4 and all(len(c.get_offsets()) == 1 for c in markers)
    assert "l2 undefined" in fig.texts[0].get_text() and "l1 exactly 0" in fig.texts[0].get_text()
    images = ImageDissimilarity(n_images=2)
    g = torch.Generator().manual_seed(0)
    a = {f"l{i}": torch.randn(2, 6, generator=g) for i in range(3)}
    b = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in a.items()}
    b["l1"] = a["l1"].clone()
    images.update(a, b)
    table = pd.concat([images.result().assign(model="m1"), images.result().assign(model="m2")])
    fig = plot_image_dissimilarity(table, image=1)
    assert len(fig.axes[0].get_lines()) == 2 and "image 1" in fig.axes[0].get_title()
    assert "l1 exactly 0" in fig.texts[0].get_text()
    with pytest.raises(RobustlensError, match="image 5"):
        plot_image_dissimilarity(table, image=5)
