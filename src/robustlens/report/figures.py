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

__all__ = ["FIGURE_DPI", "accuracy_vs_eps_figure", "cascade_accuracy_figure", "corruption_accuracy_figure",
           "found_by_figure", "save_png"]

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


_NORM_NAMES = {"inf": "L-inf", "2": "L2", "1": "L1"}


def _eps_text(norm: str, eps: float) -> str:
    return f"{_NORM_NAMES.get(norm, norm)} eps={eps:g}"


def cascade_accuracy_figure(stages: pd.DataFrame) -> Figure:
    """Robust accuracy after each stage of an AutoAttack cascade: one panel per attack label,
    one line per model x eps, the stages on the x axis (stage 0: clean).

    Args:
        stages: the ``cascade_stages`` table (``[model,] attack, norm, eps, stage,
            stage_attack, accuracy``; see :func:`robustlens.evaluation.cascade_stages`).
    """
    df = stages if "model" in stages.columns else stages.assign(model="")
    attacks = list(dict.fromkeys(df["attack"]))
    fig = Figure(figsize=(1.5 + 4.2 * len(attacks), 3.8), layout="constrained")
    axes = fig.subplots(1, len(attacks), squeeze=False, sharey=True)[0]
    for ax, attack in zip(axes, attacks, strict=True):
        mine = df[df["attack"] == attack]
        names: dict[int, list[str]] = {}
        for (model, norm, eps), g in mine.groupby(["model", "norm", "eps"], sort=False):
            g = g.sort_values("stage")
            for k, name in zip(g["stage"], g["stage_attack"], strict=True):
                names.setdefault(int(k), [])
                if name not in names[int(k)]:
                    names[int(k)].append(str(name))
            label = f"{model} {_eps_text(str(norm), float(eps))}".strip()
            ax.plot(g["stage"], g["accuracy"], marker="o", label=label)
        ticks = sorted(names)
        ax.set_xticks(ticks, ["/".join(names[k]) for k in ticks], rotation=30, ha="right", fontsize=8)
        ax.set_title(str(attack))
        ax.set_xlabel("after stage")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("robust accuracy")
    return fig


def found_by_figure(stages: pd.DataFrame) -> Figure:
    """Which stage of an AutoAttack cascade found the adversarial example of each image: one
    stacked bar per model x attack x eps, one segment per stage (its ``broken`` count; stage
    ``clean``: misclassified without attack), and the images no stage broke (``robust``).

    Args:
        stages: the ``cascade_stages`` table (``[model,] attack, norm, eps, stage,
            stage_attack, broken, robust``; see :func:`robustlens.evaluation.cascade_stages`).
    """
    df = stages if "model" in stages.columns else stages.assign(model="")
    groups = list(df.groupby(["model", "attack", "norm", "eps"], sort=False))
    names = list(dict.fromkeys(df.sort_values("stage", kind="stable")["stage_attack"])) + ["robust"]
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    colours["robust"] = "0.8"
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(groups)), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()
    for row, (_, g) in enumerate(groups):
        g = g.sort_values("stage")
        parts = list(zip(g["stage_attack"], g["broken"], strict=True)) + [("robust", int(g["robust"].iloc[-1]))]
        left = 0
        for name, n in parts:
            label = None if name in seen else str(name)
            seen.add(str(name))
            ax.barh(row, n, left=left, color=colours[str(name)], label=label, edgecolor="white")
            if n:
                ax.text(left + n / 2, row, str(int(n)), ha="center", va="center", fontsize=7)
            left += n
    ax.set_yticks(range(len(groups)),
                  [f"{m} {a} {_eps_text(str(n), float(e))}".strip() for (m, a, n, e), _ in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    fig.legend(fontsize=7, title="found by", loc="outside right upper")
    return fig
