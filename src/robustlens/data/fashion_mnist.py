"""Fashion-MNIST from its IDX .gz files (Xiao, Rasul & Vollgraf 2017).

Where the files are looked for, in order: the ``root`` argument, the ``ROBUSTLENS_DATA``
environment variable, then Debian's ``dataset-fashion-mnist`` location
``/usr/share/datasets/fashion-mnist``. Inside a root the four files may sit directly, in
``fashion-mnist/``, or in torchvision's ``FashionMNIST/raw/`` layout (gzipped or not).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from robustlens.data.dataset import ImageDataset
from robustlens.errors import DataError

__all__ = ["FASHION_MNIST_CLASSES", "DEBIAN_ROOT", "check_idx_file", "fashion_mnist_files",
           "find_fashion_mnist", "load_fashion_mnist", "read_idx"]

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


def _fix_hint(path: Path) -> str:
    if path.is_relative_to(DEBIAN_ROOT):
        return "Reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`."
    return "Download the file again (or point --data-root at an intact copy)."


def _parse_idx_header(head: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, header length)`` from an IDX file's first bytes."""
    if not head:
        raise DataError(f"{path} is empty (no data once read); expected an IDX file. {_fix_hint(path)}")
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: expected the magic bytes 00 00 <type> <ndim>, found "
                        f"{head[:4].hex(' ')}. {_fix_hint(path)}")
    ndim = head[3]
    offset = 4 + 4 * ndim
    if len(head) < offset:
        raise DataError(f"{path} is truncated: its IDX header needs {offset} bytes, found {len(head)}. "
                        + _fix_hint(path))
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.dtype(_IDX_DTYPES[head[2]]), dims, offset


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    Raises:
        DataError: the file is unreadable, not gzip (for ``.gz``), truncated, not IDX, or
            holds a different number of bytes than its header says.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    cut = False
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except EOFError:
        cut = True
    except gzip.BadGzipFile as err:
        raise DataError(f"{path} is truncated or corrupt: it is not gzip data ({err}), although its name ends "
                        f"in .gz. {_fix_hint(path)}") from None
    except (OSError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: it is unreadable or corrupt "
                        f"({type(err).__name__}: {err}). {_fix_hint(path)}") from None
    if cut:  # outside the handler, so no gzip exception is chained beneath the message
        check_idx_file(path)  # says how far the file decompresses, against what its header announces
        raise DataError(f"{path} is truncated (an incomplete download?): the compressed stream ends "
                        f"before its end marker. {_fix_hint(path)}")
    dtype, dims, offset = _parse_idx_header(data[:4 + 4 * 255], path)
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(f"{path} is truncated or corrupt: expected {expected} data bytes for shape "
                        f"{dims}, found {len(data) - offset}. {_fix_hint(path)}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def check_idx_file(path: Path) -> tuple[int, ...]:
    """Cheaply check an IDX file (optionally gzipped) without decompressing all of it.

    Reads the header; for ``.gz`` compares the gzip trailer's uncompressed size with the
    size the header implies (a truncated download fails this), otherwise the file size.

    Returns:
        The array shape the header announces.

    Raises:
        DataError: unreadable, not gzip, not IDX, or of the wrong size.
    """
    gz = path.suffix == ".gz"
    try:
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"{path} is empty (0 bytes); expected an IDX file. {_fix_hint(path)}")
        if gz and size < 18:  # a gzip header (10 bytes) and trailer (8) at least
            raise DataError(f"{path} is truncated: {size} bytes is too short for a gzip file. {_fix_hint(path)}")
        with gzip.open(path, "rb") if gz else path.open("rb") as f:
            head = f.read(4 + 4 * 4)
        if gz:
            with path.open("rb") as raw:
                raw.seek(-4, os.SEEK_END)
                actual = int.from_bytes(raw.read(4), "little")  # ISIZE: length mod 2**32
        else:
            actual = size
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: it is truncated or corrupt "
                        f"({type(err).__name__}: {err}). {_fix_hint(path)}") from None
    dtype, dims, offset = _parse_idx_header(head, path)
    expected = offset + int(np.prod(dims)) * dtype.itemsize
    if actual != (expected % 2**32 if gz else expected):
        if gz:  # the trailer of a cut file is arbitrary bytes: measure what really decompresses
            _check_gzip_length(path, dims, expected)
        else:
            raise DataError(f"{path} is {'truncated' if actual < expected else 'corrupt'}: its header announces "
                            f"shape {dims} ({expected} bytes), but the file holds {actual} bytes. "
                            + _fix_hint(path))
    return dims


def _check_gzip_length(path: Path, dims: tuple[int, ...], expected: int) -> None:
    """Decompress ``path`` in chunks and report how it ends (only called when its trailer disagrees)."""
    total = 0
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing; counts what really decompresses
    try:
        with path.open("rb") as raw:
            while not stream.eof and (chunk := raw.read(1 << 20)):
                total += len(stream.decompress(chunk))
    except (OSError, zlib.error) as err:
        raise DataError(f"{path} is corrupt: decompression fails after {total} of the {expected} bytes its "
                        f"header announces for shape {dims} ({err}). {_fix_hint(path)}") from None
    if not stream.eof:
        raise DataError(f"{path} is truncated (an incomplete download?): it ends after {total} of the "
                        f"{expected} decompressed bytes its header announces for shape {dims}. "
                        + _fix_hint(path))
    if total != expected:
        raise DataError(f"{path} is truncated or corrupt: it decompresses to {total} bytes, but its header "
                        f"announces shape "
                        f"{dims} ({expected} bytes). {_fix_hint(path)}")


def _candidates(root: Path) -> list[Path]:
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", root / "fashion_mnist"]


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _roots(root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    if os.environ.get("ROBUSTLENS_DATA"):
        return [Path(os.environ["ROBUSTLENS_DATA"])]
    return [DEBIAN_ROOT]


def _find(root: str | Path | None, stems: tuple[str, ...]) -> Path:
    """The first candidate folder holding every file of ``stems``; an error naming what is missing."""
    roots = _roots(root)
    best: tuple[int, Path] | None = None
    for r in roots:
        for folder in _candidates(r):
            found = sum(_locate(folder, stem) is not None for stem in stems)
            if found == len(stems):
                return folder
            if found and (best is None or found > best[0]):
                best = (found, folder)
    where = ", ".join(str(r) for r in roots)
    if best is not None:  # some of the files are there: name the missing ones
        missing = [stem + ".gz" for stem in stems if _locate(best[1], stem) is None]
        raise DataError(f"Fashion-MNIST in {best[1]} lacks {', '.join(missing)} (looked for the .gz and the "
                        f"uncompressed name). Copy the missing file(s) there; the four files are "
                        f"{', '.join(s + '.gz' for pair in _FILES.values() for s in pair)}. {_HOW_TO_GET}")
    if len(roots) == 1 and not roots[0].exists():
        raise DataError(f"Fashion-MNIST not found: the folder {roots[0]} does not exist. {_HOW_TO_GET}")
    raise DataError(f"Fashion-MNIST not found in {where}: no {', '.join(s + '.gz' for s in stems)} there "
                    f"(nor in its fashion-mnist/ or FashionMNIST/raw/ subfolders). {_HOW_TO_GET}")


def find_fashion_mnist(root: str | Path | None = None,
                       splits: tuple[str, ...] = ("train", "test")) -> Path:
    """The folder holding the Fashion-MNIST files of ``splits`` (see the module docstring for the search).

    Args:
        root: folder to look in instead of ``ROBUSTLENS_DATA`` / Debian's location.
        splits: the splits whose files must be there (a test-only run needs only ``test``).

    Raises:
        DataError: no folder holds them; the message names the missing files.
    """
    return _find(root, tuple(s for split in splits for s in _FILES[split]))


def fashion_mnist_files(split: str = "test", root: str | Path | None = None) -> tuple[Path, Path]:
    """The (images, labels) IDX files of a split (see the module docstring for the search).

    Only that split's two files need to be present (a test-only run needs no training files).

    Args:
        split: ``"train"`` or ``"test"``.
        root: folder to look in instead of ``ROBUSTLENS_DATA`` / Debian's location.

    Raises:
        DataError: unknown split, or the files are not found (the message names them).
    """
    if split not in _FILES:
        raise DataError(f"split must be 'train' or 'test'; received {split!r}.")
    stems = _FILES[split]
    folder = _find(root, stems)
    images, labels = (_locate(folder, stem) for stem in stems)
    assert images is not None and labels is not None  # _find checked both
    return images, labels


def load_fashion_mnist(split: str = "test", root: str | Path | None = None) -> ImageDataset:
    """Load a Fashion-MNIST split as float images in [0, 1], shape (N, 1, 28, 28).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: folder to look in instead of ``ROBUSTLENS_DATA`` / Debian's location.

    Raises:
        DataError: files missing, truncated or corrupt (the message names the file).
    """
    image_file, label_file = fashion_mnist_files(split, root)
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise DataError(f"unexpected Fashion-MNIST shapes: images {images.shape} in {image_file}, "
                        f"labels {labels.shape} in {label_file}; expected (N, 28, 28) and (N,). "
                        + _fix_hint(image_file))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(x, y, FASHION_MNIST_CLASSES, f"fashion_mnist/{split}")
