"""The HDF5 activation store: round trips, appends, interrupted writes, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from robustlens import create_model
from robustlens.activations import ActivationStore, ActivationWriter, record
from robustlens.data import load_digits
from robustlens.errors import DataError, RobustlensError

LAYERS = ["features.1", "classifier.1", "classifier.2"]


@pytest.fixture(scope="module")
def recorded() -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("digits_cnn").eval()
    data = load_digits()
    batches = []
    with torch.no_grad():
        for images, _ in data.subset(torch.arange(70)).batches(32):
            with record(model, LAYERS) as rec:
                model(images)
            batches.append(dict(rec))
    return batches, data.labels[:70]


def test_round_trip(tmp_path, recorded):
    batches, labels = recorded
    path = tmp_path / "acts.h5"
    with ActivationWriter(path, attrs={"model": "digits_cnn", "eps": 0.1}, chunk_bytes=4096) as w:
        start = 0
        for acts in batches:
            b = len(next(iter(acts.values())))
            w.append(acts, label=labels[start:start + b],
                     name=[f"img{i}" for i in range(start, start + b)])
            start += b
        assert w.n_stimuli == 70
    with ActivationStore(path) as store:
        assert len(store) == 70
        assert store.layers == LAYERS
        assert store.attrs == {"model": "digits_cnn", "eps": 0.1}
        assert store.shape("features.1") == (8, 8, 8)
        for layer in LAYERS:
            expected = torch.cat([b[layer] for b in batches])
            assert store.read(layer).dtype == torch.float32
            torch.testing.assert_close(store.read(layer), expected, rtol=0, atol=0)
            torch.testing.assert_close(store.read(layer, [5, 1, 5, 69]), expected[[5, 1, 5, 69]])
        assert store.stimuli["label"].tolist() == labels.tolist()
        assert store.stimuli["name"].iloc[3] == "img3"
        seen = torch.cat([acts["classifier.1"] for acts, _ in store.batches(25, ["classifier.1"])])
        torch.testing.assert_close(seen, torch.cat([b["classifier.1"] for b in batches]))


def test_append_mode_and_interrupted_append(tmp_path, recorded):
    batches, _ = recorded
    path = tmp_path / "acts.h5"
    with ActivationWriter(path, dtype="float16") as w:
        w.append(batches[0], index=np.arange(32))
    with h5py.File(path, "a") as f:  # simulate a crash after one dataset was grown
        f["layers/0"].resize(40, axis=0)
    with ActivationWriter(path, mode="a") as w:
        assert w.n_stimuli == 32
        w.append(batches[1], index=np.arange(32, 64))
    with ActivationStore(path) as store:
        assert len(store) == 64
        assert store.read("classifier.2").dtype == torch.float16
        np.testing.assert_array_equal(store.stimulus_field("index"), np.arange(64))
        expected = torch.cat([batches[0]["classifier.2"], batches[1]["classifier.2"]]).half()
        torch.testing.assert_close(store.read("classifier.2"), expected)


def test_mismatches_are_clear_errors(tmp_path, recorded):
    batches, _ = recorded
    path = tmp_path / "acts.h5"
    with ActivationWriter(path) as w:
        w.append(batches[0], label=np.zeros(32))
        with pytest.raises(RobustlensError, match="lacks"):
            w.append({"features.1": batches[0]["features.1"]}, label=np.zeros(32))
        with pytest.raises(RobustlensError, match="same first"):
            w.append(batches[0], label=np.zeros(3))
        with pytest.raises(RobustlensError, match="stimulus fields"):
            w.append(batches[0])
    with ActivationStore(path) as store, pytest.raises(RobustlensError, match="Did you mean"):
        store.read("classifier.3")
    with pytest.raises(DataError, match="no activation store"):
        ActivationStore(tmp_path / "missing.h5")
    other = tmp_path / "plain.h5"
    h5py.File(other, "w").close()
    with pytest.raises(DataError, match="not a robustlens activation store"):
        ActivationStore(other)
