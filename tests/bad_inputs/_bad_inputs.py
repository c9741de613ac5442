"""Helpers of the bad-input corpus: the fixtures' types and a tiny IDX writer."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

CliError = Callable[[list[str]], str]
LibError = Callable[..., str]


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path
