"""Figures of a study, drawn from its tidy result tables.

Each function takes DataFrames and returns a matplotlib ``Figure``; none shows or saves.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["accuracy_vs_eps_figure"]


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

