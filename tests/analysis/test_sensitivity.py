"""S2 sensitivity: hand computations, a real model, streaming, top-k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from robustlens import create_model
from robustlens.activations import record
from robustlens.analysis import ChannelSensitivity, sensitivity, top_k_channels, top_k_neurons
from robustlens.errors import RobustlensError


def test_hand_computed_perturbation():
    clean = torch.zeros(2, 3, 2, 2)
    adv = clean.clone()
    adv[0, 1, 0, 0] = 4.0  # image 0, channel 1, one of 4 positions
    adv[1, 1] = -1.0  # image 1, channel 1, all positions
    adv[1, 2, 1, 1] = 2.0
    # channel 1: image 0 -> 4/4 = 1, image 1 -> 4/4 = 1; mean 1. channel 2: (0 + 2/4) / 2
    torch.testing.assert_close(sensitivity(clean, adv, "channel"),
                               torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))
    # layer: (4 + 4 + 2) / (2 * 12)
    assert float(sensitivity(clean, adv, "layer")) == pytest.approx(10 / 24)
    neuron = sensitivity(clean, adv, "neuron")
    assert neuron.shape == (3, 2, 2)
    assert float(neuron[1, 0, 0]) == pytest.approx((4 + 1) / 2)
    # an (n_stimuli, n_features) matrix: one value per feature
    x = torch.randn(5, 7)
    torch.testing.assert_close(sensitivity(x, x + torch.arange(7.0)),
                               torch.arange(7.0, dtype=torch.float64), rtol=0, atol=1e-6)
    arr = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_allclose(sensitivity(arr, -arr).numpy(), 2 * np.abs(arr).mean(0))


def test_bad_input():
    with pytest.raises(RobustlensError, match="differ in shape"):
        sensitivity(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(RobustlensError, match="level"):
        sensitivity(torch.zeros(2, 3), torch.zeros(2, 3), "unit")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def recorded(digits):
    """Clean and perturbed activations of a digits_cnn on real digits."""
    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    images = digits.images[:96]
    g = torch.Generator().manual_seed(1)
    delta = 0.05 * torch.sign(torch.randn(images.shape, generator=g))  # |delta| = eps everywhere
    out = []
    with torch.no_grad():
        for lo in range(0, 96, 32):
            pair = []
            for x in (images[lo:lo + 32], images[lo:lo + 32] + delta[lo:lo + 32]):
                with record(model, ["normalize", "features.1", "features.4", "classifier.1"]) as r:
                    model(x)
                pair.append(dict(r))
            out.append(pair)
    return model, out


def test_real_model_untouched_and_first_layer(recorded):
    model, batches = recorded
    red = ChannelSensitivity()
    for clean, _ in batches:
        red.update(clean, clean)  # nothing changed: every sigma is 0
    assert (red.result()["sensitivity"] == 0).all()
    red = ChannelSensitivity()
    for clean, adv in batches:
        red.update(clean, adv)
    layers = red.layer_result().set_index("layer")
    std = float(model.normalize.std.flatten()[0])
    # Normalize divides by std: every |change| is eps / std
    assert layers.loc["normalize", "sensitivity"] == pytest.approx(0.05 / std, rel=1e-6)
    assert layers.loc["normalize", "std"] == pytest.approx(0.0, abs=1e-6)
    assert (layers["sensitivity"] > 0).all()
    assert layers.loc["features.4", "n_channels"] == 16
    assert layers.loc["classifier.1", "n_features"] == 32


def test_streaming_equals_one_pass_and_functions(recorded):
    _, batches = recorded
    one = ChannelSensitivity(neurons=True)
    parts = [ChannelSensitivity(neurons=True) for _ in range(2)]
    for i, (clean, adv) in enumerate(batches):
        one.update(clean, adv)
        parts[i % 2].update(clean, adv)
    merged = parts[1].merge(parts[0])
    r1 = one.result().set_index("unit")
    r2 = merged.result().set_index("unit").loc[r1.index]
    np.testing.assert_allclose(r1[["sensitivity", "std", "sem"]], r2[["sensitivity", "std", "sem"]],
                               rtol=1e-12)
    clean = torch.cat([c["features.4"] for c, _ in batches])
    adv = torch.cat([a["features.4"] for _, a in batches])
    np.testing.assert_allclose(r1.loc[r1["layer"] == "features.4", "sensitivity"],
                               sensitivity(clean, adv, "channel").numpy(), rtol=1e-10)
    torch.testing.assert_close(one.neuron_sensitivity("features.4"),
                               sensitivity(clean, adv, "neuron"))
    per_image = (clean - adv).abs().flatten(2).mean(2).double()  # (N, C)
    np.testing.assert_allclose(r1.loc[r1["layer"] == "features.4", "std"],
                               per_image.std(0).numpy(), rtol=1e-6)
    copy = ChannelSensitivity(neurons=True)
    copy.load_state_dict(one.state_dict())
    pd.testing.assert_frame_equal(copy.result(), one.result())
    pd.testing.assert_frame_equal(copy.layer_result(), one.layer_result())
    with pytest.raises(RobustlensError, match="neurons=True"):
        ChannelSensitivity().neuron_sensitivity("features.4")


def test_top_k():
    table = pd.DataFrame({
        "eps": [0.1] * 4 + [0.2] * 4,
        "layer": ["a", "a", "b", "b"] * 2,
        "channel": [0, 1, 0, 1] * 2,
        "sensitivity": [0.1, 0.5, 0.3, 0.2, 0.9, 0.1, 0.4, 0.8],
    })
    top = top_k_channels(table, 2)
    assert top[["eps", "layer", "channel", "rank"]].values.tolist() == [
        [0.1, "a", 1, 1], [0.1, "b", 0, 2], [0.2, "a", 0, 1], [0.2, "b", 1, 2]]
    per_layer = top_k_channels(table, 1, per_layer=True)
    assert len(per_layer) == 4 and (per_layer["rank"] == 1).all()
    expected = table.loc[table.groupby(["eps", "layer"])["sensitivity"].idxmax()]
    assert sorted(per_layer["sensitivity"]) == sorted(expected["sensitivity"])


def test_class_filter_equals_filtering_by_hand(recorded, digits):
    _, batches = recorded
    labels = digits.labels[:96]
    chosen = [3, 7]
    filtered = ChannelSensitivity(neurons=True, classes=chosen)
    by_hand = ChannelSensitivity(neurons=True)
    for b, (clean, adv) in enumerate(batches):
        y = labels[32 * b:32 * b + 32]
        filtered.update(clean, adv, y)
        keep = (y == 3) | (y == 7)
        by_hand.update({k: v[keep] for k, v in clean.items()}, {k: v[keep] for k, v in adv.items()})
    assert int(filtered.result()["n_images"].iloc[0]) == int(((labels == 3) | (labels == 7)).sum()) > 0
    pd.testing.assert_frame_equal(filtered.result(), by_hand.result())
    pd.testing.assert_frame_equal(filtered.layer_result(), by_hand.layer_result())
    pd.testing.assert_frame_equal(filtered.neuron_result(), by_hand.neuron_result())
    # and it differs from the unfiltered sensitivity
    everything = ChannelSensitivity()
    for clean, adv in batches:
        everything.update(clean, adv)
    assert not np.allclose(everything.result()["sensitivity"], filtered.result()["sensitivity"])
    with pytest.raises(RobustlensError, match="labels"):
        filtered.update(*batches[0])
    for bad in ([], "3", [1.5], [-1]):
        with pytest.raises(RobustlensError, match="class"):
            ChannelSensitivity(classes=bad)


def test_neuron_level_ranking(recorded):
    _, batches = recorded
    red = ChannelSensitivity(neurons=True)
    for clean, adv in batches:
        red.update(clean, adv)
    table = red.neuron_result()
    layer = table[table["layer"] == "features.4"]
    clean = torch.cat([c["features.4"] for c, _ in batches])
    adv = torch.cat([a["features.4"] for _, a in batches])
    by_hand = (clean - adv).abs().double().mean(0)  # (C, H, W) per neuron
    assert len(layer) == by_hand.numel()
    np.testing.assert_allclose(layer["sensitivity"], by_hand.flatten().numpy(), rtol=1e-10)
    c, h, w = by_hand.shape
    best = int(by_hand.flatten().argmax())
    top = top_k_neurons(table, 3, per_layer=True)
    first = top[(top["layer"] == "features.4") & (top["rank"] == 1)].iloc[0]
    assert first["neuron"] == best and first["channel"] == best // (h * w)
    assert first["position"] == best % (h * w) and first["unit"] == f"features.4#{best // (h * w)}"
    assert len(top) == 3 * table["layer"].nunique()
    # neuron_result(k) keeps each layer's k largest: the same rows as ranking per layer
    kept = red.neuron_result(3).sort_values(["layer", "neuron"]).reset_index(drop=True)
    ranked = top.drop(columns="rank").sort_values(["layer", "neuron"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, ranked, check_dtype=False)
    # the channel ranking can differ from the neuron ranking: a channel is a mean over positions
    overall = top_k_neurons(table, 5)
    assert overall["sensitivity"].is_monotonic_decreasing
    with pytest.raises(RobustlensError, match="neuron"):
        top_k_neurons(red.result(), 2)
