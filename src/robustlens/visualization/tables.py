"""Images as tidy table rows, so that figures can be drawn from Parquet files alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["pixel_rows", "rows_to_image"]


def pixel_rows(pixels: torch.Tensor, /, **columns: Any) -> pd.DataFrame:
    """A (C, H, W) image as tidy rows ``channel, y, x, value`` plus constant ``columns``.

    The coordinates are int16 and the value float32 (10 bytes a pixel before the constant
    columns): a study's pixel tables (renders, saliency maps, image pairs at 224 px) run to
    tens of millions of rows.

    Args:
        pixels: the (C, H, W) image.
        **columns: constant columns put first (``model="a", image=0``).
    """
    c, h, w = pixels.shape
    grid = np.indices((c, h, w), dtype=np.int16 if max(c, h, w) < 2**15 else np.int64).reshape(3, -1)
    df = pd.DataFrame({"channel": grid[0], "y": grid[1], "x": grid[2],
                       "value": pixels.detach().float().cpu().reshape(-1).numpy()})
    for name, value in reversed(list(columns.items())):
        df.insert(0, name, value)
    return df


def rows_to_image(rows: pd.DataFrame) -> torch.Tensor:
    """Inverse of :func:`pixel_rows`: (C, H, W) float32.

    Args:
        rows: one image's rows (``channel``, ``y``, ``x``, ``value`` columns).
    """
    c, h, w = (int(rows[k].max()) + 1 for k in ("channel", "y", "x"))
    out = np.zeros((c, h, w), dtype=np.float32)
    out[rows["channel"], rows["y"], rows["x"]] = rows["value"]
    return torch.from_numpy(out)
