"""ImageNet-style image folders, read lazily (ILSVRC2012: Russakovsky et al. 2015).

Layouts understood, with ``root`` the folder holding the splits (or a split folder itself):

- ``root/<split>/<wnid>/*.JPEG``: one folder per class named by its WordNet id (the training
  set as distributed, and the usual re-organised validation set);
- ``root/val/ILSVRC2012_val_00000001.JPEG ...``: the validation set as distributed, labelled
  by Kaggle's ``LOC_val_solution.csv`` or by the ILSVRC2012 devkit's
  ``ILSVRC2012_validation_ground_truth.txt`` with its ``meta.mat``. Both are looked for in the
  split folder, its parent and ``root``, and the devkit files also in ``ILSVRC2012_devkit_t12/data``
  beneath those;
- Kaggle's tree, ``root/ILSVRC/Data/CLS-LOC/<split>``.

Class indices follow the standard 1000-class order (the sorted WordNet ids, see
:func:`imagenet_wnids`). Images are ordered by class, then by file name, whatever the layout,
so "every k-th image" picks the same images from a flat and from a re-organised validation set
(and matches torchvision's ``ImageFolder`` order on the latter).
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from robustlens.data.dataset import check_indices
from robustlens.errors import DataError, suggest

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "imagenet_wnids", "load_imagenet", "read_image"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
ClassMode = Literal["imagenet", "folders", "auto"]
_CLASS_MODES = ("imagenet", "folders", "auto")
_SPLIT_NAMES = ("train", "val", "validation", "test")
_KAGGLE_TREE = Path("ILSVRC", "Data", "CLS-LOC")
_KAGGLE_CSV = "LOC_val_solution.csv"
_DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
_DEVKIT_META = "meta.mat"
_DEVKIT_DIRS = (Path(), Path("ILSVRC2012_devkit_t12", "data"), Path("data"))
_WNID = re.compile(r"n\d{8}")
_VAL_FILE = re.compile(r"ILSVRC2012_val_(\d{8})")


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted: ``n01440764`` is class 0)."""
    text = resources.files("robustlens.data").joinpath("imagenet_wnids.txt").read_text()
    return tuple(text.split())


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def _default_threads() -> int:
    return min(8, os.cpu_count() or 1)


def read_image(path: str | Path, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """Decode one image with the standard ImageNet evaluation geometry.

    RGB (grey, palette and CMYK images converted), shorter side resized to ``resize`` (bilinear,
    antialiased: PIL's resampling, as torchvision's ``Resize`` on PIL images), central
    ``crop`` x ``crop`` square (torchvision's ``CenterCrop`` rounding).

    Returns:
        uint8 tensor (3, crop, crop); divide by 255 for pixels in [0, 1].

    Raises:
        DataError: the file is missing, unreadable, truncated or not an image.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")  # decodes the whole file: truncation shows here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}. Expected a readable image file; "
                        "re-extract or re-download it, or remove it from the folder.") from None
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size != (width, height):
        image = image.resize(size, Image.Resampling.BILINEAR)
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@dataclass(frozen=True, eq=False, repr=False)
class ImageFolder:
    """Labelled image files, decoded only when a batch asks for them.

    Build one with :func:`load_imagenet`. Holds file names and labels only, so a 50,000-image
    validation set costs a few megabytes; :meth:`subset` is lazy too.

    Attributes:
        files: image paths, one per image, in dataset order.
        labels: int64 (N,), class index of each file.
        class_names: one name per class index.
        name: where the images come from (``"imagenet/val"``, ...).
        resize: side the shorter image side is resized to, pixels.
        crop: side of the central square crop, pixels; images come out (3, crop, crop).
        n_threads: threads decoding a batch in parallel (PIL releases the GIL while decoding).
        class_ids: one identifier per class index besides its name, or empty: the WordNet id
            (``"n01440764"``) for ImageNet classes, the folder name otherwise.
    """

    files: tuple[str, ...]
    labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str = "imagefolder"
    resize: int = 256
    crop: int = 224
    n_threads: int = field(default_factory=_default_threads)
    class_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.files)
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise DataError(f"labels must be int64 ({n},); received {self.labels.dtype} "
                            f"{tuple(self.labels.shape)}.")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise DataError(f"labels must lie in [0, {len(self.class_names)}) (one per class name); received "
                            f"values in [{int(self.labels.min())}, {int(self.labels.max())}].")
        if self.class_ids and len(self.class_ids) != len(self.class_names):
            raise DataError(f"class_ids must be empty or one per class name ({len(self.class_names)}); "
                            f"received {len(self.class_ids)}.")
        _check_geometry(self.resize, self.crop)
        if self.n_threads < 1:
            raise DataError(f"n_threads must be >= 1; received {self.n_threads}.")

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"ImageFolder(name={self.name!r}, n_images={len(self)}, num_classes={self.num_classes}, "
                f"resize={self.resize}, crop={self.crop})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return 3, self.crop, self.crop

    def subset(self, indices: torch.Tensor) -> ImageFolder:
        """The images at ``indices``, in that order (no image is read)."""
        idx = check_indices(indices, len(self), self.name)
        return replace(self, files=tuple(self.files[i] for i in idx.tolist()), labels=self.labels[idx])

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, crop, crop) float32 in [0, 1] and labels (B,) at ``indices``.

        Raises:
            DataError: an image is unreadable (the message names the file).
        """
        idx = check_indices(indices, len(self), self.name)
        paths = [self.files[i] for i in idx.tolist()]
        if not paths:
            return torch.empty((0, *self.image_shape)), self.labels[idx]
        decode = functools.partial(read_image, resize=self.resize, crop=self.crop)
        if len(paths) == 1 or self.n_threads == 1:
            images = [decode(p) for p in paths]
        else:
            pool = ThreadPoolExecutor(max_workers=min(self.n_threads, len(paths)))
            try:
                images = list(pool.map(decode, paths))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        return torch.stack(images).float().div_(255), self.labels[idx]


def _check_geometry(resize: int, crop: int) -> None:
    if resize < 1 or crop < 1 or crop > resize:
        raise DataError(f"need 1 <= crop <= resize (pixels); received resize={resize}, crop={crop}.")


def _image_names(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".")
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file())


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _split_folder(root: Path, split: str) -> Path:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"ImageNet root {root} {what}: expected a folder holding train/ and val/ "
                        "(or a split folder itself). Set [data].root (or --data-root) to it.")
    for base in (root, root / _KAGGLE_TREE):
        if (base / split).is_dir():
            return base / split
    present = [s for s in _SPLIT_NAMES if (root / s).is_dir() or (root / _KAGGLE_TREE / s).is_dir()]
    if present:
        hint = " (ImageNet's test labels are not public: use 'val')" if split == "test" else ""
        raise DataError(f"no {split!r} split in {root}: expected the folder {root / split}; found "
                        f"{', '.join(present)}. Set split to one of them{hint}.")
    if root.name.lower() in _SPLIT_NAMES and root.name.lower() != split.lower():
        raise DataError(f"{root} looks like the {root.name!r} split, but split {split!r} was asked for: "
                        f"set split = {root.name!r}, or point root at the folder holding the splits.")
    return root  # root is a split folder itself


def _read_kaggle_csv(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path}: {err}. Re-download Kaggle's {_KAGGLE_CSV}.") from None
    if not rows or [c.strip() for c in rows[0][:2]] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path} is not Kaggle's {_KAGGLE_CSV}: expected the header "
                        f"'ImageId,PredictionString'; received {','.join(rows[0]) if rows else 'an empty file'!r}.")
    labels = {}
    for line, row in enumerate(rows[1:], start=2):
        words = row[1].split() if len(row) > 1 else []
        if not words:
            raise DataError(f"{path}, line {line}: expected 'ImageId,wnid x0 y0 x1 y1 ...'; received {row!r}.")
        labels[row[0].strip()] = words[0]
    return labels


def _read_devkit(truth: Path, meta: Path) -> dict[str, str]:
    import scipy.io

    try:
        synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
        ids = np.atleast_1d(synsets["ILSVRC2012_ID"])
        wnids = np.atleast_1d(synsets["WNID"])
    except (OSError, ValueError, KeyError, TypeError, IndexError, scipy.io.matlab.MatReadError) as err:
        raise DataError(f"cannot read the devkit's {meta}: {err!r}. Expected ILSVRC2012_devkit_t12/data/meta.mat "
                        "with its 'synsets' table; re-extract the devkit.") from None
    id_to_wnid = {int(i): str(w) for i, w in zip(ids, wnids, strict=True) if 1 <= int(i) <= 1000}
    try:
        values = [int(v) for v in truth.read_text().split()]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"cannot read the devkit's {truth}: {err}. Expected one ILSVRC2012_ID (1..1000) "
                        "per line; re-extract the devkit.") from None
    unknown = sorted({v for v in values if v not in id_to_wnid})
    if unknown:
        raise DataError(f"{truth} lists ILSVRC2012_IDs {unknown[:5]} that {meta} does not define; expected "
                        "ids 1..1000 of the same devkit. Re-extract the devkit.")
    return {f"ILSVRC2012_val_{n:08d}": id_to_wnid[v] for n, v in enumerate(values, start=1)}


def _flat_labels(folder: Path, root: Path) -> dict[str, str]:
    """Image stem -> wnid for a flat validation folder, from Kaggle's CSV or the devkit."""
    places = list(dict.fromkeys([folder, folder.parent, root]))
    for place in places:
        if (place / _KAGGLE_CSV).is_file():
            log.info("labels from %s", place / _KAGGLE_CSV)
            return _read_kaggle_csv(place / _KAGGLE_CSV)
    for place in places:
        for sub in _DEVKIT_DIRS:
            truth, meta = place / sub / _DEVKIT_TRUTH, place / sub / _DEVKIT_META
            if truth.is_file():
                if not meta.is_file():
                    raise DataError(f"found {truth} but not {meta}: the ground truth's ILSVRC2012_IDs map to "
                                    "classes through the devkit's meta.mat; put both in the same folder.")
                log.info("labels from %s", truth)
                return _read_devkit(truth, meta)
    raise DataError(f"{folder} holds images directly but no labels for them: expected class folders "
                    f"({folder}/<wnid>/*.JPEG), Kaggle's {_KAGGLE_CSV}, or the devkit's {_DEVKIT_TRUTH} "
                    f"and {_DEVKIT_META} (in ILSVRC2012_devkit_t12/data/), in {' or '.join(map(str, places))}.")


def _scan(folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """Image paths and their wnids (or folder names), ordered by class, then file name."""
    flat = _image_names(folder)
    subfolders = _subfolders(folder)
    if flat:
        mixed = [d for d in subfolders if _WNID.fullmatch(d)]
        if mixed:
            raise DataError(f"{folder} holds both {len(flat)} images directly and class folders "
                            f"({', '.join(mixed[:3])}, ...): expected one layout. Move the loose images into "
                            "their class folders, or the class folders' images out.")
        by_name = _flat_labels(folder, root)
        missing = [n for n in flat if os.path.splitext(n)[0] not in by_name]
        if missing:
            raise DataError(f"{len(missing)} images in {folder} have no label ({', '.join(missing[:3])}, ...): "
                            "expected every file listed in the labels file. Remove the extra files.")
        pairs = sorted((by_name[os.path.splitext(n)[0]], n) for n in flat)
        return [str(folder / n) for _, n in pairs], [w for w, _ in pairs]
    files: list[str] = []
    classes: list[str] = []
    for sub in subfolders:
        names = _image_names(folder / sub)
        files += [str(folder / sub / n) for n in names]
        classes += [sub] * len(names)
    if not files:
        found = f"{len(subfolders)} folders without images" if subfolders else "nothing"
        raise DataError(f"no images in {folder}: expected class folders (<wnid>/*.JPEG) or images with their "
                        f"labels file; found {found} (image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return files, classes


def load_imagenet(root: str | Path, split: str = "val", *, resize: int = 256, crop: int = 224,
                  classes: ClassMode = "imagenet", n_threads: int | None = None) -> ImageFolder:
    """An ImageNet-style split, read lazily (see the module docstring for the layouts).

    Args:
        root: folder holding the splits (``train/``, ``val/``, or Kaggle's ``ILSVRC/``), or a
            split folder itself.
        split: sub-folder to read (``"val"``, ``"train"``).
        resize: side the shorter image side is resized to (bilinear, antialiased), pixels.
        crop: side of the central square crop, pixels.
        classes: ``"imagenet"``: labels are the standard 1000-class indices and class names the
            human-readable ImageNet names; every class folder must be an ImageNet-1k WordNet id.
            ``"folders"``: one class per folder present, in sorted order, named by the folder
            (other datasets in the same layout). ``"auto"``: ``"imagenet"`` when every class
            folder is an ImageNet-1k WordNet id (the full set, or subsets such as ImageNet-100:
            labels stay the 1000-class indices), else ``"folders"``.
        n_threads: threads decoding each batch (default: up to 8, one per CPU).

    Raises:
        DataError: missing root or split, no images, no labels, unknown class folders.
    """
    if classes not in _CLASS_MODES:
        raise DataError(f"classes must be one of {', '.join(map(repr, _CLASS_MODES))}; received {classes!r}."
                        f"{suggest(str(classes), _CLASS_MODES)}")
    _check_geometry(resize, crop)
    root = Path(root).expanduser()
    folder = _split_folder(root, split)
    files, wnids = _scan(folder, root)
    if classes == "auto":
        classes = "imagenet" if all(w in _wnid_index() for w in set(wnids)) else "folders"
    if classes == "imagenet":
        index = _wnid_index()
        unknown = sorted({w for w in wnids if w not in index})
        if unknown:
            raise DataError(f"{', '.join(unknown[:5])} in {folder} {'is' if len(unknown) == 1 else 'are'} not "
                            "ImageNet-1k WordNet ids (expected folders like n01440764). For other class "
                            "folders pass classes=\"folders\" (in a study: [data] classes = \"folders\"; one "
                            "class per folder, in sorted order).")
        from robustlens.models.zoo import imagenet_classes

        labels = torch.tensor([index[w] for w in wnids], dtype=torch.int64)
        class_names = tuple(imagenet_classes())
        class_ids = imagenet_wnids()
    else:
        present = sorted(set(wnids))
        position = {w: i for i, w in enumerate(present)}
        labels = torch.tensor([position[w] for w in wnids], dtype=torch.int64)
        class_names = class_ids = tuple(present)
    log.info("%s: %d images of %d classes in %s", split, len(files), len(set(wnids)), folder)
    return ImageFolder(files=tuple(files), labels=labels, class_names=class_names, name=f"imagenet/{split}",
                       class_ids=class_ids,
                       resize=resize, crop=crop, n_threads=_default_threads() if n_threads is None else n_threads)
