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


def test_dataset_examples_on_the_train_split_use_dataset_indices(trained_digits_cnn) -> None:
    from robustlens.data import load_digits
    from robustlens.visualization.examples import dataset_examples

    train = load_digits("train")
    units = ["features.1#2", "features.4#0"]
    sets = dataset_examples(trained_digits_cnn, units, train, k=4, batch_size=100)
    with torch.no_grad():
        maps = trained_digits_cnn.features[:2](trained_digits_cnn.normalize(train.images))[:, 2]
    expected = maps.flatten(1).amax(1).double().topk(4)
    assert [s.unit for s in sets] == units
    torch.testing.assert_close(sets[0].values, expected.values)
    assert sets[0].indices.tolist() == expected.indices.tolist()  # indices into the train split
    assert torch.equal(sets[0].images, train.images[expected.indices])
    # the same as one reducer fed the whole split
    one = DatasetExamples(trained_digits_cnn, units[1], k=4).update(train.images).result()
    assert sets[1].indices.tolist() == one.indices.tolist()
    # a bounded, seeded draw of images: only those indices can come back
    drawn = dataset_examples(trained_digits_cnn, units[:1], train, k=3, n_images=50, seed=1)[0]
    pool = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:50]
    assert set(drawn.indices.tolist()) <= set(pool.tolist())
    with pytest.raises(RobustlensError, match="unit"):
        dataset_examples(trained_digits_cnn, [], train)


def test_dataset_examples_read_an_imagenet_folder_lazily(tmp_path) -> None:
    import sys
    from pathlib import Path

    from robustlens.data import load_imagenet
    from robustlens.visualization.examples import dataset_examples

    sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
    from _fake_imagenet import make_fake_imagenet

    root = make_fake_imagenet(tmp_path, ["n01440764", "n01443537"], per_class=5, size=(48, 40), splits=("train",))
    data = load_imagenet(root, "train", resize=36, crop=32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    calls: list[int] = []
    original = data.get_batch
    object.__setattr__(data, "get_batch", lambda idx: calls.append(len(idx)) or original(idx))
    (found,) = dataset_examples(model, ["0#1"], data, k=3, batch_size=4)
    assert calls == [4, 4, 2]  # decoded batch by batch
    images, _ = original(torch.arange(len(data)))
    with torch.no_grad():
        expected = torch.relu(model[0](images))[:, 1].flatten(1).amax(1).double().topk(3)
    torch.testing.assert_close(found.values, expected.values)
    assert found.images.shape == (3, 3, 32, 32)


def test_dataset_indices_survive_merge_and_state(trained_digits_cnn, digits) -> None:
    images = digits.images[:200]
    unit = "features.1#2"
    one = DatasetExamples(trained_digits_cnn, unit, k=4).update(images)
    a, b = DatasetExamples(trained_digits_cnn, unit, 4), DatasetExamples(trained_digits_cnn, unit, 4)
    b.update(images[120:], torch.arange(120, 200))  # another worker's shard, with its own positions
    a.update(images[:120], torch.arange(120))
    copy = DatasetExamples(trained_digits_cnn, unit, 4)
    copy.load_state_dict(a.merge(b).state_dict())
    assert copy.result().indices.tolist() == one.result().indices.tolist()
    assert copy.n_seen == 200
