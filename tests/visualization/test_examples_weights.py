"""Dataset examples with receptive fields, weight grids and the Gabor layout."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from robustlens.errors import RobustlensError
from robustlens.visualization import (
    DatasetExamples,
    plot_examples,
    plot_gabor_layout,
    plot_saliency,
    plot_weights,
    receptive_field,
    weight_grid,
)
from robustlens.visualization.weights import gabor_layout

from .conftest import count_hooks


def test_top_k_matches_brute_force_and_merges(trained_digits_cnn, digits) -> None:
    model, images = trained_digits_cnn, digits.images[:300]
    unit = "features.1#2"
    one = DatasetExamples(model, unit, k=5)
    for chunk in images.split(64):
        one.update(chunk)
    with torch.no_grad():
        acts = model.features[:2](model.normalize(images))[:, 2]
    expected = acts.flatten(1).amax(1).double().topk(5)
    res = one.result()
    torch.testing.assert_close(res.values, expected.values)
    assert res.indices.tolist() == expected.indices.tolist()
    a, b = DatasetExamples(model, unit, 5), DatasetExamples(model, unit, 5)
    a.update(images[:150])
    b.update(images[150:])
    merged = a.merge(b).result()
    assert merged.indices.tolist() == res.indices.tolist()
    # crops are the images cut to their receptive-field boxes
    for img, box, crop in zip(res.images, res.boxes, res.crops, strict=True):
        t, left, bot, r = box.tolist()
        assert torch.equal(crop, img[:, t:bot, left:r])
    assert isinstance(plot_examples(res), Figure)
    assert count_hooks(model) == 0


def test_receptive_field_of_two_3x3_convs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))
    # output (y, x) of a 3x3 then a stride-2 3x3: input rows 2y .. 2y+4
    assert receptive_field(model, "2", (1, 2), (1, 16, 16)) == (2, 4, 7, 9)
    # padding clips the box at the border
    padded = nn.Sequential(nn.Conv2d(1, 2, 5, padding=2))
    assert receptive_field(padded, "0", (0, 0), (1, 9, 9)) == (0, 0, 3, 3)


def test_weight_grid_normalises_each_kernel() -> None:
    w = torch.zeros(3, 1, 2, 2)
    w[0, 0, 0, 0], w[1, 0, 1, 1], w[2, 0, 0, 1] = 5.0, -0.01, 1.0
    grid = weight_grid(w, columns=3, padding=1)
    assert grid.shape == (1, 4, 10)
    assert float(grid[0, 1, 1]) == 1.0  # kernel 0's max -> white
    assert float(grid[0, 2, 5]) == 0.0  # kernel 1's negative max -> black
    assert float(grid[0, 1, 2]) == 0.5  # zero weight -> grey
    rgb = weight_grid(torch.randn(5, 3, 3, 3))
    assert rgb.shape[0] == 3 and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    with pytest.raises(RobustlensError):
        weight_grid(torch.zeros(3, 3))


def test_first_layer_figure_and_gabor_layout() -> None:
    from robustlens.models import create_model

    assert isinstance(plot_weights(create_model("fmnist_cnn")), Figure)
    torch.manual_seed(0)
    vone = create_model("vone_fmnist_cnn")
    from robustlens.models.vone import VOneBlock

    block = next(m for m in vone.modules() if isinstance(m, VOneBlock))
    chosen, sf_c, th_c = gabor_layout(block, n_orientations=4, n_frequencies=3)
    assert chosen.shape == (3, 4) and list(th_c) == [22.5, 67.5, 112.5, 157.5]
    assert all(a < b for a, b in zip(sf_c, sf_c[1:], strict=False))
    theta = block.gabor_params["theta"] % 180
    for q in range(4):  # each chosen filter lies in its orientation column
        for i in chosen[:, q]:
            if i >= 0:
                assert 45 * q <= theta[i] < 45 * (q + 1)
    assert isinstance(plot_gabor_layout(vone), Figure)
    maps = {"gradient": torch.randn(2, 1, 8, 8)}
    assert isinstance(plot_saliency(torch.rand(2, 1, 8, 8), maps), Figure)
