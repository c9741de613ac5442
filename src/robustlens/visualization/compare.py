"""The most sensitive channels of several models, rendered side by side (study S2).

:func:`render_top_channels` takes a sensitivity table (:meth:`ChannelSensitivity.result`
rows of several models, with a ``model`` column, or :func:`top_k_channels` output), picks
each model's ``k`` most sensitive channels and renders them with :func:`~.render.render`;
:func:`plot_top_channels` draws one row per model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from robustlens.analysis.sensitivity import top_k_channels
from robustlens.errors import RobustlensError
from robustlens.visualization.figures import plot_image_rows
from robustlens.visualization.render import RenderResult, render

__all__ = ["plot_top_channels", "render_top_channels"]


def render_top_channels(models: Mapping[str, nn.Module], sensitivity: pd.DataFrame, k: int = 4,
                        **render_options: Any) -> dict[str, list[tuple[str, RenderResult]]]:
    """Render each model's ``k`` most sensitive channels.

    Args:
        models: model label -> model; labels match the table's ``model`` column (a table
            without one is used for every model).
        sensitivity: rows with ``unit`` (``"layer#C"``) and ``sensitivity`` columns, and
            ``model`` when several models are compared. Rank within one attack x eps: filter
            the table first.
        k: channels per model.
        **render_options: passed to :func:`~.render.render` (``steps``, ``input_size``, ...).

    Returns:
        model label -> [(unit, render result)], most sensitive first.
    """
    missing = {"unit", "sensitivity"} - set(sensitivity.columns)
    if missing:
        raise RobustlensError(f"the sensitivity table lacks columns {sorted(missing)}.")
    out: dict[str, list[tuple[str, RenderResult]]] = {}
    for label, model in models.items():
        rows = sensitivity
        if "model" in rows.columns:
            rows = rows[rows["model"] == label]
            if rows.empty:
                raise RobustlensError(f"no sensitivity rows for model {label!r}; the table has "
                                      f"{sorted(sensitivity['model'].unique())}.")
        top = top_k_channels(rows, k, by=[])
        out[label] = [(str(unit), render(model, str(unit), **render_options))
                      for unit in top["unit"]]
    return out


def plot_top_channels(renders: Mapping[str, list[tuple[str, RenderResult]]],
                      title: str = "Most sensitive channels") -> Figure:
    """One row per model of the renders of :func:`render_top_channels`."""
    rows = {label: [(unit, r.images[0]) for unit, r in items] for label, items in renders.items()}
    return plot_image_rows(rows, title)
