"""An on-disk activation store (HDF5), written batch by batch and read back later.

When the activations of many images do not fit in memory, or should outlive the run that
computed them, write them to an HDF5 file as they come::

    with ActivationWriter("acts.h5", attrs={"model": "fmnist_cnn"}) as store:
        for images, labels in data.batches(256):
            with record(model, ["features.1", "classifier.1"]) as rec:
                model(images)
            store.append(rec, label=labels, index=torch.arange(start, start + len(labels)))

    with ActivationStore("acts.h5") as store:
        store.layers                        # ["features.1", "classifier.1"]
        store.read("classifier.1")          # (N, 128) tensor
        store.stimuli                       # DataFrame: label, index

Layout: one chunked, resizable dataset per layer (the stimulus axis first), one per stimulus
field, the layer names in order and the number of *complete* rows as attributes. A write
interrupted in the middle of an append leaves the file readable up to the last complete
append, and reopening it with ``mode="a"`` continues from there. Any string can be a layer
name (datasets are numbered; the names are attributes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from robustlens.errors import DataError, RobustlensError, suggest

__all__ = ["ActivationStore", "ActivationWriter"]

_FORMAT = "robustlens-activations"
_VERSION = 1


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a dependency
        raise RobustlensError("the activation store needs h5py: pip install h5py") from exc
    return h5py


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Sequence):
        arr = np.asarray(value)
        return arr.astype(object) if arr.dtype.kind == "U" else arr
    raise RobustlensError(f"{what} must be a tensor, an array or a list; "
                          f"received {type(value).__name__}.")


class ActivationWriter:
    """Append activations and stimulus metadata to an HDF5 file, batch by batch.

    Args:
        path: the file (created, or replaced with ``mode="w"``).
        mode: ``"w"`` to create or replace, ``"a"`` to append to an existing store with the
            same layers, shapes and stimulus fields.
        attrs: JSON-serialisable descriptors of the whole store (model, attack, eps, ...).
        dtype: dtype to store activations in (e.g. ``"float16"`` to halve the file);
            default: the activations' own.
        compression: ``None``, ``"gzip"`` or ``"lzf"``.
        chunk_bytes: target size of one chunk; a chunk holds whole stimuli.
    """

    def __init__(self, path: str | Path, mode: Literal["w", "a"] = "w", *,
                 attrs: Mapping[str, Any] | None = None, dtype: str | torch.dtype | None = None,
                 compression: Literal["gzip", "lzf"] | None = None,
                 chunk_bytes: int = 1 << 20) -> None:
        if mode not in ("w", "a"):
            raise RobustlensError(f"mode must be 'w' or 'a'; received {mode!r}.")
        h5py = _h5py()
        self.path = Path(path)
        self._compression = compression
        self._chunk_bytes = int(chunk_bytes)
        self._dtype = (str(dtype).removeprefix("torch.") if dtype is not None else None)
        if mode == "a" and not self.path.exists():
            raise DataError(f"cannot append to {self.path}: no such file. "
                            "Use mode='w' to create it.")
        self._file = h5py.File(self.path, mode)
        if mode == "w":
            self._file.attrs["format"] = _FORMAT
            self._file.attrs["format_version"] = _VERSION
            self._file.attrs["n_stimuli"] = 0
            self._file.attrs["layer_names"] = json.dumps([])
            self._file.attrs["attrs"] = json.dumps(dict(attrs or {}))
            self._file.create_group("layers")
            self._file.create_group("stimuli")
        else:
            _check_format(self._file, self.path)
            if attrs:
                merged = {**json.loads(self._file.attrs["attrs"]), **attrs}
                self._file.attrs["attrs"] = json.dumps(merged)
            n = int(self._file.attrs["n_stimuli"])
            for group in ("layers", "stimuli"):  # drop rows of an interrupted append
                for ds in self._file[group].values():
                    if ds.shape[0] != n:
                        ds.resize(n, axis=0)
        self._names: list[str] = json.loads(self._file.attrs["layer_names"])

    @property
    def n_stimuli(self) -> int:
        """Rows completely written so far."""
        return int(self._file.attrs["n_stimuli"])

    def _create(self, group: Any, key: str, arr: np.ndarray) -> Any:
        h5py = _h5py()
        row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * max(arr.dtype.itemsize, 1))
        rows = max(1, min(self._chunk_bytes // row_bytes, 4096))
        dtype = h5py.string_dtype() if arr.dtype == object else arr.dtype
        return group.create_dataset(key, shape=(0, *arr.shape[1:]), maxshape=(None, *arr.shape[1:]),
                                    chunks=(rows, *arr.shape[1:]), dtype=dtype,
                                    compression=self._compression)

    def append(self, activations: Mapping[str, torch.Tensor],
               **stimuli: torch.Tensor | np.ndarray | Sequence[Any]) -> None:
        """Append one batch.

        Args:
            activations: layer name -> (B, ...) activation (a :class:`Recording` works).
                Every append must have the same layers with the same per-stimulus shapes.
            **stimuli: per-stimulus fields, each (B,) or (B, ...): labels, dataset indices,
                predictions, file names; the same fields at every append.
        """
        if not activations:
            raise RobustlensError("append() needs at least one activation.")
        arrays = {name: _as_array(v, f"activation {name!r}") for name, v in activations.items()}
        fields = {k: _as_array(v, f"stimulus field {k!r}") for k, v in stimuli.items()}
        sizes = {a.shape[0] if a.ndim else -1 for a in (*arrays.values(), *fields.values())}
        if len(sizes) != 1 or -1 in sizes:
            shapes = {k: a.shape for k, a in (*arrays.items(), *fields.items())}
            raise RobustlensError("every activation and stimulus field of a batch must have the "
                                  f"same first (batch) dimension; received shapes {shapes}.")
        if self._dtype is not None:
            arrays = {k: a.astype(self._dtype) for k, a in arrays.items()}
        layers, meta = self._file["layers"], self._file["stimuli"]
        if not self._names and self.n_stimuli == 0 and not len(meta):
            for i, (name, arr) in enumerate(arrays.items()):
                self._create(layers, str(i), arr).attrs["name"] = name
            for key, arr in fields.items():
                self._create(meta, key, arr)
            self._names = list(arrays)
            self._file.attrs["layer_names"] = json.dumps(self._names)
        self._check_batch(arrays, fields)
        n, b = self.n_stimuli, next(iter(sizes))
        for i, name in enumerate(self._names):
            ds = layers[str(i)]
            ds.resize(n + b, axis=0)
            ds[n:] = arrays[name]
        for key, arr in fields.items():
            ds = meta[key]
            ds.resize(n + b, axis=0)
            ds[n:] = arr
        self._file.attrs["n_stimuli"] = n + b
        self._file.flush()

    def _check_batch(self, arrays: dict[str, np.ndarray], fields: dict[str, np.ndarray]) -> None:
        if set(arrays) != set(self._names):
            missing = [n for n in self._names if n not in arrays]
            extra = [n for n in arrays if n not in self._names]
            raise RobustlensError(f"this store holds layers {self._names}; the batch lacks "
                                  f"{missing} and adds {extra}. Write different layers to "
                                  "another store.")
        for i, name in enumerate(self._names):
            want = self._file["layers"][str(i)].shape[1:]
            if arrays[name].shape[1:] != want:
                raise RobustlensError(f"layer {name!r} holds activations of shape {want} per "
                                      f"stimulus; received {arrays[name].shape[1:]}.")
        known = set(self._file["stimuli"])
        if set(fields) != known:
            raise RobustlensError(f"this store has stimulus fields {sorted(known)}; received "
                                  f"{sorted(fields)}. Pass the same fields at every append.")

    def close(self) -> None:
        """Flush and close the file (also done by the ``with`` block)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _check_format(file: Any, path: Path) -> None:
    if file.attrs.get("format") != _FORMAT:
        raise DataError(f"{path} is not a robustlens activation store "
                        "(written by ActivationWriter).")
    if int(file.attrs.get("format_version", 0)) > _VERSION:
        raise DataError(f"{path} was written by a newer robustlens (store format "
                        f"{int(file.attrs['format_version'])}); upgrade robustlens to read it.")


class ActivationStore:
    """Read a store written by :class:`ActivationWriter` (read-only, lazily).

    Args:
        path: the HDF5 file.
    """

    def __init__(self, path: str | Path) -> None:
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"no activation store at {self.path}.")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"cannot read {self.path} as HDF5 ({exc}); "
                            "the file may be corrupt.") from exc
        _check_format(self._file, self.path)
        self.layers: list[str] = json.loads(self._file.attrs["layer_names"])
        """Layer names, in the order they were first written."""
        self.attrs: dict[str, Any] = json.loads(self._file.attrs["attrs"])
        """The descriptors given to the writer."""
        self._n = int(self._file.attrs["n_stimuli"])

    def __len__(self) -> int:
        """Number of stimuli (rows) stored."""
        return self._n

    def _dataset(self, layer: str) -> Any:
        if layer not in self.layers:
            raise RobustlensError(f"layer {layer!r} is not in {self.path}."
                                  f"{suggest(layer, self.layers)} Stored layers: {self.layers}.")
        return self._file["layers"][str(self.layers.index(layer))]

    def shape(self, layer: str) -> tuple[int, ...]:
        """Per-stimulus shape of ``layer``'s activations, e.g. (C, H, W)."""
        return tuple(self._dataset(layer).shape[1:])

    def read(self, layer: str,
             index: slice | Sequence[int] | np.ndarray | torch.Tensor | None = None
             ) -> torch.Tensor:
        """Activations of ``layer`` for the stimuli at ``index`` (all by default).

        Returns:
            (n, ...) tensor, in the stored dtype, rows in the order of ``index``.
        """
        return torch.from_numpy(self._rows(self._dataset(layer), index))

    def _rows(self, ds: Any, index: slice | Sequence[int] | np.ndarray | torch.Tensor | None
              ) -> np.ndarray:
        if index is None:
            index = slice(0, self._n)
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            return np.asarray(ds[start:stop:step])
        idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        idx = np.where(idx < 0, idx + self._n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise RobustlensError(f"stimulus indices must lie in [0, {self._n}); received "
                                  f"[{int(idx.min())}, {int(idx.max())}].")
        unique, inverse = np.unique(idx, return_inverse=True)
        return np.asarray(ds[unique])[inverse] if unique.size else np.asarray(ds[:0])

    def stimulus_field(self, name: str) -> np.ndarray:
        """One stimulus field, (N,) or (N, ...); strings come back as ``str`` objects."""
        return self._field_rows(name, slice(0, self._n))

    def _field_rows(self, name: str, rows: slice) -> np.ndarray:
        meta = self._file["stimuli"]
        if name not in meta:
            raise RobustlensError(f"no stimulus field {name!r} in {self.path}."
                                  f"{suggest(name, meta)}")
        ds = meta[name]
        if ds.dtype.kind == "O":
            return np.asarray(ds.asstr()[rows], dtype=object)
        return np.asarray(ds[rows])

    @property
    def stimuli(self) -> pd.DataFrame:
        """The one-dimensional stimulus fields, one row per stimulus."""
        meta = self._file["stimuli"]
        cols = {k: self.stimulus_field(k) for k, ds in meta.items() if ds.ndim == 1}
        return pd.DataFrame(cols, index=pd.RangeIndex(self._n, name="stimulus"))

    def batches(self, batch_size: int, layers: Sequence[str] | None = None
                ) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]]:
        """Iterate in stored order: (layer -> (b, ...) tensor, field -> (b, ...) array)."""
        names = list(self.layers if layers is None else layers)
        sets = {n: self._dataset(n) for n in names}
        fields = list(self._file["stimuli"])
        for start in range(0, self._n, batch_size):
            rows = slice(start, min(start + batch_size, self._n))
            acts = {n: torch.from_numpy(np.asarray(ds[rows])) for n, ds in sets.items()}
            yield acts, {k: self._field_rows(k, rows) for k in fields}

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, n_stimuli={self._n}, layers={self.layers})"
