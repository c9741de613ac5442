"""Data readers: IDX files, Fashion-MNIST locations, digits, class-balanced subsets."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from robustlens.data import class_balanced_indices, load_digits, load_fashion_mnist
from robustlens.data.fashion_mnist import read_idx
from robustlens.errors import DataError


def _write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _fake_fashion(folder: Path, n: int = 20, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    for split in ("train", "t10k"):
        _write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def test_idx_round_trip(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)


def test_truncated_idx_is_a_clear_error(tmp_path: Path) -> None:
    a = np.zeros((5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "t.gz", a)
    data = gzip.decompress((tmp_path / "t.gz").read_bytes())[:-10]
    (tmp_path / "t.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t.gz")
    (tmp_path / "bad").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX"):
        read_idx(tmp_path / "bad")


def test_reads_a_root_and_scales_to_unit_range(tmp_path: Path) -> None:
    images, labels = _fake_fashion(tmp_path)
    d = load_fashion_mnist("train", root=tmp_path)
    assert d.images.shape == (20, 1, 28, 28) and d.images.dtype == torch.float32
    np.testing.assert_allclose(d.images[:, 0].numpy(), images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(d.labels.numpy(), labels)
    assert d.class_names[0] == "T-shirt/top" and len(d.class_names) == 10


def test_torchvision_layout_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_fashion(tmp_path / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv("ROBUSTLENS_DATA", str(tmp_path))
    assert len(load_fashion_mnist("test")) == 20


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    with pytest.raises(DataError, match="split"):
        load_fashion_mnist("validation", root=tmp_path)


def test_real_fashion_mnist(fashion_mnist_test) -> None:  # type: ignore[no-untyped-def]
    d = fashion_mnist_test
    assert d.images.shape == (10000, 1, 28, 28)
    assert float(d.images.min()) == 0.0 and float(d.images.max()) == 1.0
    assert torch.bincount(d.labels).tolist() == [1000] * 10
    # the first test label of the published file is 9 (ankle boot)
    assert int(d.labels[0]) == 9


def test_digits() -> None:
    d = load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and 0 <= float(d.images.min()) <= float(d.images.max()) <= 1
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.25) < 0.01


def test_class_balanced_subset_is_balanced_and_deterministic() -> None:
    labels = torch.arange(1000) % 7
    a = class_balanced_indices(labels, 5, seed=3)
    b = class_balanced_indices(labels, 5, seed=3)
    c = class_balanced_indices(labels, 5, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [5] * 7
    assert len(set(a.tolist())) == 35
    state = torch.random.get_rng_state()
    class_balanced_indices(labels, 5, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # no global RNG use
    with pytest.raises(DataError, match="fewer than n_per_class"):
        class_balanced_indices(labels, 500)
