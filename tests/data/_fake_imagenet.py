"""A tiny fake ImageNet on disk, in the layouts ImageNet is distributed in.

Import it from a test module beside it (``sys.path`` as in ``tests/attacks/conftest.py``)::

    root = make_fake_imagenet(tmp_path, ["n01440764", "n01443537"], per_class=3, size=(40, 30))
    load_imagenet(root, "val")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

Layout = Literal["folders", "kaggle_csv", "devkit"]


def fake_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth random RGB image of ``size`` = (width, height), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = size
    small = rng.integers(0, 256, size=(max(2, height // 4), max(2, width // 4), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def make_fake_imagenet(root: Path, wnids: Sequence[str], per_class: int = 2, size: tuple[int, int] = (48, 40), *,
                       splits: Sequence[str] = ("train", "val"), val_layout: Layout = "folders",
                       devkit_ids: dict[str, int] | None = None) -> Path:
    """Write a fake ImageNet under ``root`` and return ``root``.

    ``root/train/<wnid>/<wnid>_<k>.JPEG`` for the training split. The validation split is either
    ``root/val/<wnid>/ILSVRC2012_val_<n>.JPEG`` (``"folders"``) or flat
    ``root/val/ILSVRC2012_val_<n>.JPEG`` labelled by ``root/LOC_val_solution.csv``
    (``"kaggle_csv"``) or by ``root/ILSVRC2012_devkit_t12/data/`` (``"devkit"``: ground truth
    and a ``meta.mat``; ``devkit_ids`` maps each wnid to its ILSVRC2012_ID, by default the
    reverse of ``wnids`` order, so the devkit ids differ from the class indices).

    Validation image ``n`` (1-based) is of class ``wnids[(n - 1) % len(wnids)]``: classes are
    interleaved in file order, as in the real validation set. Every image has its own pixels
    (seeded by split and number), ``size`` = (width, height) pixels.
    """
    root = Path(root)
    if "train" in splits:
        for c, wnid in enumerate(wnids):
            folder = root / "train" / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                fake_image(10_000 + 100 * c + k, size).save(folder / f"{wnid}_{k}.JPEG", quality=95)
    if "val" not in splits:
        return root
    val = root / "val"
    val.mkdir(parents=True, exist_ok=True)
    truth = []
    for n in range(1, per_class * len(wnids) + 1):
        wnid = wnids[(n - 1) % len(wnids)]
        truth.append(wnid)
        folder = val / wnid if val_layout == "folders" else val
        folder.mkdir(exist_ok=True)
        fake_image(n, size).save(folder / f"ILSVRC2012_val_{n:08d}.JPEG", quality=95)
    if val_layout == "kaggle_csv":
        rows = [f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 5 6 20 21" for n, w in enumerate(truth, start=1)]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
    elif val_layout == "devkit":
        ids = devkit_ids or {w: len(wnids) - i for i, w in enumerate(wnids)}
        write_devkit(root / "ILSVRC2012_devkit_t12" / "data", ids, truth)
    return root


def write_devkit(folder: Path, ids: dict[str, int], truth: Sequence[str]) -> None:
    """The devkit's ``meta.mat`` (a ``synsets`` struct array) and validation ground truth.

    ``ids`` maps wnid -> ILSVRC2012_ID (1..1000); one internal WordNet node (id 1001, with
    children) is added, as in the real file, which the reader must skip.
    """
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    entries = [(i, w, f"words of {w}", 0) for w, i in ids.items()] + [(1001, "n00001740", "entity", 3)]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.empty((len(entries), 1), dtype=dtype)
    for row, (i, w, words, children) in enumerate(entries):
        synsets[row, 0] = (np.array([[i]], dtype=np.uint16), np.array([w]), np.array([words]),
                           np.array([[children]], dtype=np.uint8))
    savemat(folder / "meta.mat", {"synsets": synsets})
    (folder / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[w]}\n" for w in truth))
