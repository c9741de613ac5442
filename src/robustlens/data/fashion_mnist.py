"""Fashion-MNIST from its IDX .gz files (Xiao, Rasul & Vollgraf 2017).

Where the files are looked for, in order: the ``root`` argument, the ``ROBUSTLENS_DATA``
environment variable, then Debian's ``dataset-fashion-mnist`` location
``/usr/share/datasets/fashion-mnist``. Inside a root the four files may sit directly, in
``fashion-mnist/``, or in torchvision's ``FashionMNIST/raw/`` layout (gzipped or not).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from robustlens.data.dataset import ImageDataset
from robustlens.errors import DataError

__all__ = ["FASHION_MNIST_CLASSES", "DEBIAN_ROOT", "find_fashion_mnist", "load_fashion_mnist",
           "read_idx"]

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = ("Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
               "or put the four IDX .gz files in a folder and pass --data-root / set ROBUSTLENS_DATA.")
_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(f"{path} is truncated or corrupt: expected {expected} data bytes for shape "
                        f"{tuple(dims)}, found {len(data) - offset}.")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def _candidates(root: Path) -> list[Path]:
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fashion_mnist"]


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The folder holding the Fashion-MNIST files (see the module docstring for the search)."""
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root))
    elif os.environ.get("ROBUSTLENS_DATA"):
        roots.append(Path(os.environ["ROBUSTLENS_DATA"]))
    else:
        roots.append(DEBIAN_ROOT)
    for r in roots:
        for folder in _candidates(r):
            if all(_locate(folder, s) for pair in _FILES.values() for s in pair):
                return folder
    where = ", ".join(str(r) for r in roots)
    raise DataError(f"Fashion-MNIST not found in {where}. {_HOW_TO_GET}")


def load_fashion_mnist(split: str = "test", root: str | Path | None = None) -> ImageDataset:
    """Load a Fashion-MNIST split as float images in [0, 1], shape (N, 1, 28, 28).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder to look in instead of ``ROBUSTLENS_DATA`` / Debian's location.
    """
    if split not in _FILES:
        raise DataError(f"split must be 'train' or 'test'; received {split!r}.")
    folder = find_fashion_mnist(root)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_locate(folder, image_stem))  # type: ignore[arg-type]
    labels = read_idx(_locate(folder, label_stem))  # type: ignore[arg-type]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise DataError(f"unexpected Fashion-MNIST shapes in {folder}: images {images.shape}, "
                        f"labels {labels.shape}.")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(x, y, FASHION_MNIST_CLASSES, f"fashion_mnist/{split}")
