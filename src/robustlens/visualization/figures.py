"""Figures of renders, saliency maps and dataset examples (matplotlib, never shown or saved)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from robustlens.visualization.examples import ExampleSet

__all__ = ["plot_examples", "plot_image_grid", "plot_image_groups", "plot_image_rows", "plot_saliency",
           "saliency_heatmap"]


def _draw(ax: object, image: torch.Tensor | np.ndarray, cmap: str = "gray") -> None:
    arr = np.asarray(image.detach().float().cpu() if isinstance(image, torch.Tensor) else image)
    if arr.ndim == 3:
        arr = arr.transpose(1, 2, 0)
        if arr.shape[2] == 1:
            arr = arr[..., 0]
    if arr.ndim == 2:
        ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")  # type: ignore[attr-defined]
    else:
        ax.imshow(arr.clip(0, 1), interpolation="nearest")  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def plot_image_rows(rows: Mapping[str, Sequence[tuple[str, torch.Tensor]]],
                    title: str = "") -> Figure:
    """One row per label (e.g. per model), each a sequence of titled (C, H, W) images in
    [0, 1] — e.g. the renders of two models' most sensitive channels side by side."""
    n_rows = max(1, len(rows))
    n_cols = max([len(v) for v in rows.values()] + [1])
    fig = Figure(figsize=(1.8 * n_cols + 0.6, 1.9 * n_rows + 0.4), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, (label, items) in enumerate(rows.items()):
        for q, (name, image) in enumerate(items):
            ax = axes[r, q]
            ax.set_axis_on()
            _draw(ax, image)
            ax.set_title(name, fontsize=7)
            if q == 0:
                ax.set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_image_grid(cells: Mapping[tuple[str, str], torch.Tensor], rows: Sequence[str],
                    columns: Sequence[str], title: str = "",
                    cmaps: Mapping[str, str] | None = None, cell_inches: float = 1.35) -> Figure:
    """Images on a labelled grid: ``cells[(row, column)]`` is a (C, H, W) image in [0, 1];
    missing cells stay blank. Row labels sit on the left, column labels on top.

    Args:
        cells: (row label, column label) -> image.
        rows: the row labels, top to bottom.
        columns: the column labels, left to right.
        title: the figure's title.
        cmaps: row label -> colour map of its one-channel images (default ``"gray"``).
        cell_inches: the side of one cell, inches.
    """
    n_rows, n_cols = max(1, len(rows)), max(1, len(columns))
    fig = Figure(figsize=(cell_inches * n_cols + 1.0, cell_inches * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            ax = axes[r, c]
            image = cells.get((row, column))
            if image is not None:
                _draw(ax, image, (cmaps or {}).get(row, "gray"))
            else:
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if r == 0:
                ax.set_title(column, fontsize=8)
            if c == 0:
                ax.set_ylabel(row, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_image_groups(cells: Mapping[tuple[str, str], Sequence[tuple[str, torch.Tensor]]], rows: Sequence[str],
                      columns: Sequence[str], title: str = "", cell_inches: float = 1.25) -> Figure:
    """A labelled grid whose cells each hold a few titled images side by side: e.g. rows eps or
    layers, columns the models of a study (a robust model beside a standard one), each cell
    the renders of that model's top-k channels there.

    Args:
        cells: (row label, column label) -> titled (C, H, W) images in [0, 1], left to right;
            missing cells stay blank.
        rows: the row labels, top to bottom (written left of the first column).
        columns: the column labels, left to right (written above each group of images).
        title: the figure's title.
        cell_inches: the side of one image, inches.
    """
    rows, columns = list(rows) or [""], list(columns) or [""]
    k = max([len(v) for v in cells.values()] + [1])
    fig = Figure(figsize=(cell_inches * k * len(columns) + 0.9, (cell_inches + 0.25) * len(rows) + 0.8),
                 layout="constrained")
    groups = fig.subfigures(1, len(columns), squeeze=False, wspace=0.02)[0]
    for c, (group, column) in enumerate(zip(groups, columns, strict=True)):
        group.suptitle(column, fontsize=9, fontweight="bold")
        axes = group.subplots(len(rows), k, squeeze=False)
        for r, row in enumerate(rows):
            items = list(cells.get((row, column), ()))
            for q in range(k):
                ax = axes[r, q]
                if q < len(items):
                    _draw(ax, items[q][1])
                    ax.set_title(items[q][0], fontsize=6)
                else:
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                if c == 0 and q == 0:
                    ax.set_ylabel(row, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def saliency_heatmap(attribution: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """(B, C, H, W) attributions -> (B, H, W) in [0, 1]: |a| summed over channels, divided
    by each map's ``percentile``-th value and clipped."""
    m = attribution.detach().float().abs().sum(1)
    flat = m.flatten(1)
    q = torch.quantile(flat, percentile / 100, dim=1).clamp_min(1e-12)
    return (m / q.view(-1, 1, 1)).clamp(0, 1)


def plot_saliency(images: torch.Tensor, maps: Mapping[str, torch.Tensor], title: str = "",
                  image_labels: Sequence[str] | None = None) -> Figure:
    """Images in the first row, then one row of heat maps per method (or model x method).

    Args:
        images: (B, C, H, W) pixels in [0, 1].
        maps: row label -> (B, C, H, W) attributions.
        title: figure title.
        image_labels: a title per column.
    """
    b = images.shape[0]
    rows = {"image": list(images)} | {k: list(saliency_heatmap(v)) for k, v in maps.items()}
    fig = Figure(figsize=(1.7 * b + 1.2, 1.7 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), b, squeeze=False)
    for r, (label, items) in enumerate(rows.items()):
        for q, image in enumerate(items):
            _draw(axes[r, q], image, cmap="gray" if r == 0 else "magma")
            if q == 0:
                axes[r, q].set_ylabel(label, fontsize=8)
            if r == 0 and image_labels is not None:
                axes[r, q].set_title(image_labels[q], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_examples(examples: ExampleSet, title: str = "") -> Figure:
    """A unit's top images (first row, with the receptive field boxed) and their crops."""
    k = len(examples.values)
    fig = Figure(figsize=(1.5 * k + 0.6, 3.4), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    for i in range(k):
        _draw(axes[0, i], examples.images[i])
        t, left, b, r = (int(v) for v in examples.boxes[i])
        axes[0, i].add_patch(_box(left, t, r - left, b - t))
        axes[0, i].set_title(f"{float(examples.values[i]):.3g}", fontsize=7)
        _draw(axes[1, i], examples.crops[i])
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("receptive field", fontsize=8)
    fig.suptitle(title or f"Top {k} dataset examples of {examples.unit}", fontsize=10)
    return fig


def _box(x: float, y: float, w: float, h: float) -> object:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="red", linewidth=1)
