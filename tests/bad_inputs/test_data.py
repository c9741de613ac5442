"""Bad data folders and files: a DataError with one line naming the file and how to fix it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from _bad_inputs import LibError, write_idx

from robustlens.data import ImageDataset, load_dataset, load_digits, load_fashion_mnist
from robustlens.data.fashion_mnist import check_idx_file, fashion_mnist_files
from robustlens.errors import DataError

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def test_a_test_only_run_needs_no_training_files(fmnist_root: Path, lib_error: LibError) -> None:
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (fmnist_root / name).unlink()
    data = load_fashion_mnist("test", fmnist_root)
    assert data.images.shape == (20, 1, 28, 28)
    message = lib_error(load_fashion_mnist, "train", fmnist_root, exc=DataError)
    assert "train-images-idx3-ubyte.gz" in message and "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize("missing", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_a_missing_file_is_named(fmnist_root: Path, lib_error: LibError, missing: str) -> None:
    (fmnist_root / missing).unlink()
    message = lib_error(fashion_mnist_files, "test", fmnist_root, exc=DataError)
    assert missing in message and str(fmnist_root) in message


@pytest.mark.parametrize("root", ["missing", "file", "empty"])
def test_root_not_a_dataset_folder(tmp_path: Path, lib_error: LibError, root: str) -> None:
    path = tmp_path / "data"
    if root == "file":
        path.write_text("x")
    elif root == "empty":
        path.mkdir()
    message = lib_error(load_fashion_mnist, "test", path, exc=DataError)
    assert str(path) in message and "dataset-fashion-mnist" in message


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "very_short":
        path.write_bytes(data[:12])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not_gzip":
        path.write_bytes(b"this is a text file, not gzip data at all")
    elif how == "bad_magic":
        path.write_bytes(gzip.compress(b"\x01\x02\x03\x04" + bytes(100)))
    elif how == "extra_bytes":
        path.write_bytes(gzip.compress(gzip.decompress(data) + bytes(10)))
    elif how == "header_only":
        path.write_bytes(gzip.compress(gzip.decompress(data)[:16]))


DAMAGES = ["truncated", "very_short", "empty", "not_gzip", "bad_magic", "extra_bytes", "header_only"]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("reader", ["load", "check"])
def test_damaged_gz(fmnist_root: Path, lib_error: LibError, how: str, reader: str) -> None:
    path = fmnist_root / TEST_IMAGES
    _damage(path, how)
    if reader == "load":
        message = lib_error(load_fashion_mnist, "test", fmnist_root, exc=DataError)
    else:
        message = lib_error(check_idx_file, path, exc=DataError)
    assert TEST_IMAGES in message
    if how == "truncated":
        assert "truncated" in message
    if how == "truncated":  # what really decompresses, not the cut trailer
        n_bytes = 16 + 20 * 28 * 28
        assert f"of the {n_bytes} decompressed bytes" in message, message


def test_truncated_gz_is_measured_not_guessed(fmnist_root: Path, lib_error: LibError) -> None:
    path = fmnist_root / TEST_IMAGES
    _damage(path, "truncated")
    message = lib_error(check_idx_file, path, exc=DataError)
    ends_after = int(message.split("ends after ")[1].split(" ")[0])
    assert 0 < ends_after < 16 + 20 * 28 * 28  # random pixels: about half of them


@pytest.mark.parametrize("how", ["truncated", "extra"])
def test_damaged_uncompressed(fmnist_root: Path, lib_error: LibError, how: str) -> None:
    raw = fmnist_root / "t10k-images-idx3-ubyte"
    data = gzip.decompress((fmnist_root / TEST_IMAGES).read_bytes())
    (fmnist_root / TEST_IMAGES).unlink()
    raw.write_bytes(data[:-100] if how == "truncated" else data + bytes(7))
    assert raw.name in lib_error(load_fashion_mnist, "test", fmnist_root, exc=DataError)
    assert raw.name in lib_error(check_idx_file, raw, exc=DataError)


@pytest.mark.parametrize("problem", ["count_mismatch", "wrong_size", "labels_3d"])
def test_inconsistent_files(fmnist_root: Path, lib_error: LibError, problem: str) -> None:
    rng = np.random.default_rng(1)
    if problem == "count_mismatch":
        write_idx(fmnist_root / "t10k-labels-idx1-ubyte.gz", np.arange(19) % 10)
    elif problem == "wrong_size":
        write_idx(fmnist_root / TEST_IMAGES, rng.integers(0, 256, (20, 32, 32)))
    else:
        write_idx(fmnist_root / "t10k-labels-idx1-ubyte.gz", np.zeros((20, 1, 1)))
    message = lib_error(load_fashion_mnist, "test", fmnist_root, exc=DataError)
    assert "expected (N, 28, 28)" in message


@pytest.mark.parametrize("call", [
    lambda: load_fashion_mnist("validation"),
    lambda: load_dataset("mnist"),
    lambda: load_dataset("imagenet", "val"),
    lambda: load_dataset("imagenet", "val", "/nonexistent/imagenet"),
    lambda: load_digits("validation"),
    lambda: ImageDataset(torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.long), ("a",), "x"),
    lambda: ImageDataset(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long), ("a",), "x"),
], ids=["fmnist_split", "unknown_dataset", "imagenet_no_root", "imagenet_missing_root", "digits_split",
        "images_3d", "labels_count"])
def test_bad_dataset_requests(lib_error: LibError, call: object) -> None:
    lib_error(call, exc=DataError)
