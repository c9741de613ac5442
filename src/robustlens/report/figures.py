"""The report's own figures, and saving a figure as PNG without touching matplotlib's global state.

Figures are :class:`matplotlib.figure.Figure` objects drawn on their own
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`; nothing here calls pyplot or
``matplotlib.use``, so importing the report leaves the user's backend as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robustlens.io import atomic_path

__all__ = ["corruption_accuracy_figure", "FIGURE_DPI", "accuracy_vs_eps_figure", "save_png"]

FIGURE_DPI = 110
"""Resolution of the report's PNG figures (dots per inch)."""


def save_png(fig: Figure, path: Path, dpi: int = FIGURE_DPI) -> Path:
    """Write ``fig`` as a PNG file at ``path`` (atomically), through an Agg canvas of its own.

    Args:
        fig: the figure.
        path: the PNG file written.
        dpi: resolution in dots per inch.
    """
    canvas = FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        canvas.figure.savefig(tmp, dpi=dpi, format="png")
    return path


def accuracy_vs_eps_figure(accuracy: pd.DataFrame) -> Figure:
    """Accuracy against eps, one panel per attack, one line per model.

    Args:
        accuracy: rows ``model, attack, eps, accuracy``; the ``attack == "clean"`` rows give
            each curve its eps = 0 point.
    """
    bounded = accuracy[np.isfinite(accuracy["eps"])]
    attacks = [a for a in bounded["attack"].unique() if a != "clean"]
    n = max(len(attacks), 1)
    fig = Figure(figsize=(4.2 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    clean = accuracy[accuracy["attack"] == "clean"].set_index("model")["accuracy"]
    for ax, attack in zip(axes, attacks, strict=False):
        rows = accuracy[(accuracy["attack"] == attack) & np.isfinite(accuracy["eps"])]
        for model, g in rows.groupby("model", sort=False):
            g = g.sort_values("eps")
            eps, acc = g["eps"].to_numpy(), g["accuracy"].to_numpy()
            if model in clean.index and (len(eps) == 0 or eps[0] > 0):
                eps, acc = np.r_[0.0, eps], np.r_[clean[model], acc]
            ax.plot(eps, acc, marker="o", label=str(model))
        ax.set_title(attack)
        ax.set_xlabel("eps (pixel units)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, fontsize=8)
    return fig


def corruption_accuracy_figure(accuracy: pd.DataFrame) -> Figure:
    """Accuracy against severity, one line per corruption type, one panel per model (the clean
    accuracy dashed).

    Args:
        accuracy: the study's accuracy table, with its ``severity`` column.
    """
    rows = accuracy[accuracy["severity"].notna()]
    models = list(dict.fromkeys(accuracy["model"]))
    fig = Figure(figsize=(4.6 * len(models), 3.8), layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False, sharey=True)[0]
    for ax, model in zip(axes, models, strict=True):
        mine = rows[rows["model"] == model]
        for attack, g in mine.groupby("attack", sort=False):
            g = g.sort_values("severity")
            ax.plot(g["severity"].astype(int), g["accuracy"], marker="o", label=str(attack))
        clean = accuracy[(accuracy["model"] == model) & (accuracy["attack"] == "clean")]["accuracy"]
        if len(clean):
            ax.axhline(float(clean.iloc[0]), color="0.4", linestyle="--", linewidth=1, label="clean")
        ax.set_xticks([1, 2, 3, 4, 5])
        ax.set_xlabel("severity")
        ax.set_title(str(model))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[-1].legend(fontsize=7)
    return fig
