"""Figures of a study, drawn from its tidy result tables.

Each function takes DataFrames and returns a matplotlib ``Figure``; none shows or saves.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["accuracy_vs_eps_figure", "dissimilarity_figure"]


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
    axes = fig.subplots(1, n, squeeze=False)[0]
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
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def dissimilarity_figure(dissimilarity: pd.DataFrame, attack: str) -> Figure:
    """Per-layer dissimilarity (1 - Pearson r), one panel per model, one line per eps.

    Shaded bands are +- one standard error of the mean over images.

    Args:
        dissimilarity: rows ``model, attack, eps, layer, layer_index, mean, sem``.
        attack: which attack's rows to draw.
    """
    df = dissimilarity[dissimilarity["attack"] == attack]
    models = list(df["model"].unique())
    n = max(len(models), 1)
    fig = Figure(figsize=(5.0 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, model in zip(axes, models, strict=False):
        g = df[df["model"] == model]
        for eps, ge in g.groupby("eps"):
            ge = ge.sort_values("layer_index")
            x, y = ge["layer_index"].to_numpy(), ge["mean"].to_numpy()
            sem = np.nan_to_num(ge["sem"].to_numpy())
            (line,) = ax.plot(x, y, marker=".", label=f"eps={eps:g}")
            ax.fill_between(x, y - sem, y + sem, color=line.get_color(), alpha=0.2)
        layers = g.drop_duplicates("layer_index").sort_values("layer_index")
        ax.set_xticks(layers["layer_index"].to_numpy())
        ax.set_xticklabels(layers["layer"].to_list(), rotation=70, fontsize=6)
        ax.set_title(f"{model} ({attack})")
        ax.set_ylabel("1 - Pearson r")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig
