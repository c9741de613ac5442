"""Study S1's figures over depth: several models on one axis, flagged layers marked.

The x axis is the relative depth ``layer_index / (number of layers - 1)`` of each model, so
a ResNet50 and a VOneResNet50 (or any two networks of different depths) share one axis, as
in the source's main figure. Layers whose ``1 - r`` is undefined are drawn as crosses at
the bottom of the axis, layers where it is exactly 0 as open circles, and the caption lists
them with their reason (:func:`robustlens.analysis.dissimilarity.flag_layers`). Every
function returns a :class:`matplotlib.figure.Figure` (no pyplot, nothing shown or saved).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustlens.analysis.dissimilarity import flag_layers
from robustlens.errors import RobustlensError

__all__ = ["plot_dissimilarity_over_depth", "plot_image_dissimilarity", "with_relative_depth"]

_YLABEL = "1 - Pearson r (clean vs adversarial)"


def _require(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RobustlensError(f"{what} needs columns {list(columns)}; the table lacks {missing}.")


def with_relative_depth(table: pd.DataFrame, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Add ``relative_depth = layer_index / max(layer_index)`` within each group of ``by``.

    Args:
        table: rows with a ``layer_index`` column.
        by: the columns naming one network (and condition); those absent are ignored.

    Returns:
        A copy with the ``relative_depth`` column (0 = first recorded layer, 1 = last).
    """
    _require(table, ["layer_index"], "with_relative_depth")
    groups = [c for c in by if c in table.columns]
    deepest = table.groupby(groups)["layer_index"].transform("max") if groups else table["layer_index"].max()
    return table.assign(relative_depth=table["layer_index"] / np.maximum(deepest, 1))


def _draw(ax: Axes, table: pd.DataFrame, value: str, error: str | None, hue: str) -> list[str]:
    """One line per ``hue`` over relative depth, flagged layers marked; returns caption lines."""
    notes: list[str] = []
    groups = table.groupby(hue, sort=False) if hue in table.columns else [("", table)]
    lo = np.nanmin(table[value].to_numpy(dtype=float)) if table[value].notna().any() else 0.0
    for name, g in groups:
        g = g.sort_values("layer_index")
        x = g["relative_depth"].to_numpy(dtype=float)
        y = g[value].to_numpy(dtype=float)
        (line,) = ax.plot(x, y, marker=".", label=str(name) if name != "" else None)
        color = line.get_color()
        if error is not None and error in g.columns:
            e = np.nan_to_num(g[error].to_numpy(dtype=float))
            ax.fill_between(x, y - e, y + e, color=color, alpha=0.2)
        flag = g["flag"].fillna("").astype(str) if "flag" in g.columns else pd.Series("", index=g.index)
        undefined = flag.str.startswith("undefined").to_numpy()
        partly = flag.str.startswith("partly").to_numpy()
        zero = flag.str.startswith("zero").to_numpy()
        if undefined.any():
            ax.scatter(x[undefined], np.full(undefined.sum(), min(lo, 0.0)), marker="x",
                       color=color, s=40, zorder=3)
        if zero.any():
            ax.scatter(x[zero], y[zero], facecolors="none", edgecolors=color, s=70, zorder=3)
        for mask, what in ((undefined, "undefined"), (partly, "partly undefined"), (zero, "exactly 0")):
            for layer, reason in zip(g["layer"][mask], g.get("reason", pd.Series("", index=g.index))[mask],
                                     strict=True):
                label = f"{name}: " if name != "" else ""
                notes.append(f"{label}{layer} {what}" + (f" ({reason})" if reason else ""))
    ax.set_xlabel("relative depth (layer index / last index)")
    ax.grid(alpha=0.3)
    if hue in table.columns:
        ax.legend(fontsize=8)
    return notes


def _caption(fig: Figure, notes: list[str], limit: int = 8) -> None:
    if not notes:
        return
    shown = notes[:limit] + ([f"... and {len(notes) - limit} more flagged layers"] if len(notes) > limit else [])
    text = "Flagged (x: undefined, o: exactly 0):\n" + "\n".join(s if len(s) < 140 else s[:137] + "..." for s in shown)
    fig.text(0.01, 0.0, text, fontsize=6, va="top", ha="left", wrap=True)


def plot_dissimilarity_over_depth(table: pd.DataFrame, *, value: str = "mean", error: str | None = "sem",
                                  hue: str = "model", title: str = "", ylabel: str = _YLABEL) -> Figure:
    """Mean dissimilarity of every model on one axis over relative depth (S1's main figure).

    Args:
        table: :meth:`LayerDissimilarity.result` rows with a ``model`` column (several models,
            one attack and eps); ``flag`` / ``reason`` are added by :func:`flag_layers` when
            the ``n_zero`` / ``n_undefined`` counts are there.
        value: the y column.
        error: the half-width of the shaded band (``"sem"``, ``"std"``), or ``None``.
        hue: one line per value of this column.
        title: the axes title.
        ylabel: the y axis label.
    """
    _require(table, ["layer", "layer_index", value], "plot_dissimilarity_over_depth")
    if "flag" not in table.columns and {"n_images", "n_undefined", "n_zero"} <= set(table.columns):
        table = flag_layers(table)
    table = with_relative_depth(table, by=[hue])
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    notes = _draw(ax, table, value, error, hue)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _caption(fig, notes)
    return fig


def plot_image_dissimilarity(table: pd.DataFrame, image: int | None = None, *, hue: str = "model",
                             title: str = "", ylabel: str = _YLABEL) -> Figure:
    """One image's dissimilarity per layer, every model on one axis (S1's single-image curve).

    Args:
        table: :meth:`ImageDissimilarity.result` rows (``image, layer, layer_index,
            dissimilarity, flag, reason``) with a ``model`` column; one attack and eps.
        image: the image to draw; default the first one in the table.
        hue: one line per value of this column.
        title: the axes title; default names the image.
        ylabel: the y axis label.
    """
    _require(table, ["image", "layer", "layer_index", "dissimilarity"], "plot_image_dissimilarity")
    if table.empty:
        raise RobustlensError("plot_image_dissimilarity needs at least one row.")
    chosen = int(table["image"].min()) if image is None else int(image)
    part = table[table["image"] == chosen]
    if part.empty:
        raise RobustlensError(f"image {chosen} is not in the table; it holds images "
                              f"{sorted(table['image'].unique().tolist())[:10]}.")
    part = with_relative_depth(part, by=[hue])
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    notes = _draw(ax, part, "dissimilarity", None, hue)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"image {chosen}")
    _caption(fig, notes)
    return fig
