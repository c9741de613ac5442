"""Class selection: a seeded random draw, named classes, or the class folders present.

A selection keeps the dataset's own class indices and names: choosing 100 classes of
ImageNet keeps labels in 0..999 (the model's own output indices) and the 1000 human-readable
class names, so per-class tables name each class and accuracy compares the model's top-1
index with the true one. Only the images of the classes chosen remain.

Forms of ``spec`` (the ``[data] classes`` key of a study):

- an integer ``n``: ``n`` classes drawn at random, without replacement, among the classes
  that have images, reproducibly from ``seed`` (the thesis behind S3 used 100 random
  ImageNet classes);
- a list naming classes, forms mixed freely: an ImageNet WordNet id (``"n01440764"``), a
  class index (``7``) or a class name (``"tench"``, matched exactly, else ignoring case);
- ``"folders"``: every class that has images, e.g. the class folders present in an
  ImageNet-style folder (ImageNet-100 and other subsets);
- ``None``: every class, nothing selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import torch

from robustlens.data.dataset import Dataset
from robustlens.errors import DataError, suggest

__all__ = ["ClassSpec", "classes_present", "resolve_class", "resolve_classes", "select_classes"]

ClassSpec: TypeAlias = int | Sequence[int | str] | Literal["folders"] | None


def classes_present(dataset: Dataset) -> list[int]:
    """The class indices that have at least one image in ``dataset``, in increasing order.

    Args:
        dataset: any :class:`~robustlens.data.Dataset`.
    """
    return torch.unique(dataset.labels.cpu()).tolist()


def _class_ids(dataset: Dataset) -> tuple[str, ...]:
    """Per-class identifiers other than names (ImageNet-style folders: the WordNet ids)."""
    ids = getattr(dataset, "class_ids", ())
    return tuple(ids) if ids else ()


def _describe(index: int, names: Sequence[str], ids: Sequence[str]) -> str:
    wnid = f"{ids[index]} " if ids else ""
    return f"{wnid}(index {index}, {names[index]!r})"


def _resolve_name(entry: str, names: Sequence[str], ids: Sequence[str], where: str) -> int:
    if ids and entry in ids:
        return ids.index(entry)
    matches = [i for i, n in enumerate(names) if n == entry]
    if not matches:
        matches = [i for i, n in enumerate(names) if n.lower() == entry.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        options = ", ".join(ids[i] if ids else str(i) for i in matches)
        raise DataError(f"{where}: class name {entry!r} is ambiguous: {len(matches)} classes bear "
                        f"it ({options}); name one by its {'WordNet id' if ids else 'index'}.")
    known = list(ids) + list(names)
    what = "WordNet id" if ids and entry[:1] == "n" and entry[1:].isdigit() else "class name"
    raise DataError(f"{where}: unknown {what} {entry!r}.{suggest(entry, known)} Expected a class "
                    f"name{', a WordNet id' if ids else ''} or an index in [0, {len(names)}).")


def resolve_class(entry: int | str, names: Sequence[str], ids: Sequence[str] = (),
                  where: str = "class") -> int:
    """The index of one class named by its index, its identifier (an ImageNet WordNet id) or its name.

    Names match exactly, else ignoring case; a name several classes bear (ImageNet's two
    ``"crane"`` classes) must be given by its identifier or index.

    Args:
        entry: a class index in ``[0, len(names))``, an identifier of ``ids`` or a name of ``names``.
        names: the class names in index order.
        ids: per-class identifiers in index order (ImageNet's WordNet ids), or empty.
        where: how the entry is named in error messages.

    Raises:
        DataError: an index out of range, an unknown (close matches suggested) or ambiguous name.
    """
    if isinstance(entry, bool) or not isinstance(entry, int | str):
        raise DataError(f"{where}: a class is an index, a name{' or a WordNet id' if ids else ''}; "
                        f"received {entry!r} ({type(entry).__name__}).")
    if isinstance(entry, int):
        if not 0 <= entry < len(names):
            raise DataError(f"{where}: class index {entry} is out of range; expected 0 .. {len(names) - 1}.")
        return entry
    return _resolve_name(entry, names, ids, where)


def resolve_classes(dataset: Dataset, spec: Any, seed: int = 0,
                    where: str = "[data].classes") -> list[int]:
    """The class indices ``spec`` selects in ``dataset``, in increasing order.

    Args:
        dataset: the dataset whose classes are chosen from (only classes with images count).
        spec: an integer, a list of WordNet ids / indices / names, ``"folders"`` or ``None``
            (see the module docstring).
        seed: seed of the random draw (a private ``torch.Generator``).
        where: how the spec is named in error messages.

    Raises:
        DataError: unknown or ambiguous names, indices out of range, duplicates, classes
            without images, ``n < 1`` or more classes than the dataset has.
    """
    present = classes_present(dataset)
    names, ids = tuple(dataset.class_names), _class_ids(dataset)
    if spec is None or (isinstance(spec, str) and spec == "folders"):
        return present
    if isinstance(spec, bool) or isinstance(spec, float):
        raise DataError(f"{where} must be a number of classes, a list of classes or \"folders\"; "
                        f"received {spec!r}.")
    if isinstance(spec, int):
        if spec < 1:
            raise DataError(f"{where} = {spec}: the number of classes to draw must be >= 1 (or "
                            "leave classes out for every class).")
        if spec > len(present):
            raise DataError(f"{where} = {spec}: the dataset {dataset.name!r} has images of only "
                            f"{len(present)} classes; draw at most {len(present)}.")
        generator = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(len(present), generator=generator)[:spec]
        return sorted(present[i] for i in order.tolist())
    if isinstance(spec, str):
        raise DataError(f"{where} must be a number of classes, a list of classes or \"folders\"; "
                        f"received the string {spec!r}.{suggest(spec, ['folders'])} For one class, "
                        f"write a list: [{spec!r}].")
    if not isinstance(spec, Sequence) or not len(spec):
        raise DataError(f"{where} must be a number of classes, a non-empty list of classes or "
                        f"\"folders\"; received {spec!r}.")
    chosen: dict[int, Any] = {}
    for entry in spec:
        if isinstance(entry, bool) or not isinstance(entry, int | str):
            raise DataError(f"{where}: each class is a WordNet id, an index or a name; received "
                            f"{entry!r} ({type(entry).__name__}).")
        if isinstance(entry, int):
            if not 0 <= entry < len(names):
                raise DataError(f"{where}: class index {entry} is out of range; the dataset "
                                f"{dataset.name!r} has indices 0 .. {len(names) - 1}.")
            index = entry
        else:
            index = _resolve_name(entry, names, ids, where)
        if index in chosen:
            raise DataError(f"{where}: {entry!r} and {chosen[index]!r} name the same class "
                            f"{_describe(index, names, ids)}; list each class once.")
        chosen[index] = entry
    absent = [i for i in chosen if i not in set(present)]
    if absent:
        listed = ", ".join(_describe(i, names, ids) for i in absent[:5])
        raise DataError(f"{where}: the dataset {dataset.name!r} has no images of {listed}"
                        f"{' ...' if len(absent) > 5 else ''}; choose among the "
                        f"{len(present)} classes it holds.")
    return sorted(chosen)


def select_classes(dataset: Dataset, spec: Any, seed: int = 0,
                   where: str = "[data].classes") -> Dataset:
    """The images of the classes ``spec`` selects, in dataset order, labels and names unchanged.

    Args:
        dataset: any :class:`~robustlens.data.Dataset` (lazy ones stay lazy).
        spec: see :func:`resolve_classes`; ``None`` and ``"folders"`` return ``dataset``
            itself (it holds only the classes present).
        seed: seed of a random draw.
        where: how the spec is named in error messages.
    """
    chosen = resolve_classes(dataset, spec, seed, where)
    if len(chosen) == len(classes_present(dataset)):
        return dataset
    keep = torch.isin(dataset.labels.cpu(), torch.tensor(chosen, dtype=torch.int64))
    return dataset.subset(torch.nonzero(keep).flatten())
